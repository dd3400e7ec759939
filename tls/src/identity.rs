//! The identity a certificate names: the common name (CN) of its subject, which Coord uses as
//! a client's user name and checks against a member's allowed peer names.
//!
//! The certificate was already verified by rustls against a trusted CA before its name is
//! read, but the reader still treats it as untrusted bytes: every length is checked, and
//! anything unexpected gives `None`, never a panic.

/// DER tags this reader needs.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OBJECT_IDENTIFIER: u8 = 0x06;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0;
/// The object identifier 2.5.4.3, id-at-commonName, in DER.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// One DER element: its tag, its content and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |length, byte| (length << 8) | usize::from(*byte));
        (length, &rest[count..])
    };
    if rest.len() < length {
        return None;
    }
    Some((tag, &rest[..length], &rest[length..]))
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, content, rest) = element(input)?;
    (found == tag).then_some((content, rest))
}

/// The subject's common name of the DER certificate `certificate`, if it has one in a string
/// type (UTF8String, PrintableString, IA5String or TeletexString).
pub fn certificate_common_name(certificate: &[u8]) -> Option<String> {
    let (certificate, _) = expect(certificate, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = element(rest)?.2;
    }
    let (_serial, rest) = expect(rest, INTEGER)?;
    let (_signature, rest) = expect(rest, SEQUENCE)?;
    let (_issuer, rest) = expect(rest, SEQUENCE)?;
    let (_validity, rest) = expect(rest, SEQUENCE)?;
    let (subject, _) = expect(rest, SEQUENCE)?;
    common_name_of(subject)
}

/// The common name in a Name's relative distinguished names.
fn common_name_of(mut names: &[u8]) -> Option<String> {
    while !names.is_empty() {
        let (set, rest) = expect(names, SET)?;
        names = rest;
        let mut attributes = set;
        while !attributes.is_empty() {
            let (attribute, rest) = expect(attributes, SEQUENCE)?;
            attributes = rest;
            let (oid, value) = expect(attribute, OBJECT_IDENTIFIER)?;
            if oid != COMMON_NAME {
                continue;
            }
            let (tag, text, _) = element(value)?;
            // UTF8String, PrintableString, TeletexString, IA5String.
            if matches!(tag, 0x0c | 0x13 | 0x14 | 0x16) {
                return std::str::from_utf8(text).ok().map(str::to_owned);
            }
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(common_name: Option<&str>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Coord tests");
        if let Some(name) = common_name {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_the_subject_common_name() {
        assert_eq!(
            certificate_common_name(&certificate(Some("alice@example"))).as_deref(),
            Some("alice@example")
        );
        assert_eq!(certificate_common_name(&certificate(None)), None);
    }

    #[test]
    fn truncated_or_garbage_input_gives_none() {
        let whole = certificate(Some("member-1"));
        for length in 0..whole.len() {
            // Any prefix either parses to the name (never: the lengths no longer fit) or is None.
            assert_eq!(
                certificate_common_name(&whole[..length]),
                None,
                "prefix {length}"
            );
        }
        assert_eq!(
            certificate_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(certificate_common_name(b"not der at all"), None);
    }
}
