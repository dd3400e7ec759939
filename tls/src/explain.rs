//! Plain-language explanations of TLS handshake failures, for the common mistakes: a plaintext
//! peer on a TLS port (or the reverse), a certificate from another CA, an expired certificate,
//! a name the certificate does not hold, a missing client certificate.

use rustls::{AlertDescription, CertificateError, Error as RustlsError};

fn rustls_error(error: &std::io::Error) -> Option<&RustlsError> {
    error.get_ref()?.downcast_ref::<RustlsError>()
}

fn certificate_problem(whose: &str, error: &CertificateError, trusted: &str) -> String {
    match error {
        CertificateError::UnknownIssuer => {
            format!("{whose} certificate is not signed by a CA in {trusted} (unknown issuer)")
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("{whose} certificate has expired")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("{whose} certificate is not valid yet (check the clocks)")
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!(
                "{whose} certificate does not hold the name dialled ({error}); dial a name in its \
                 subject alternative names"
            )
        }
        CertificateError::BadSignature => format!("{whose} certificate has a bad signature"),
        other => format!("{whose} certificate was refused: {other}"),
    }
}

/// Why a connection from a client to a server failed its handshake, said for the client.
pub fn explain_client_error(error: &std::io::Error) -> String {
    match rustls_error(error) {
        Some(RustlsError::InvalidCertificate(problem)) => {
            certificate_problem("the server's", problem, "--cacert")
        }
        Some(RustlsError::InvalidMessage(_)) | Some(RustlsError::InappropriateMessage { .. }) => {
            "the server did not answer in TLS: its port may be plaintext (then connect without \
             --cacert)"
                .to_owned()
        }
        Some(RustlsError::AlertReceived(alert)) => refused_by_server(*alert),
        Some(other) => other.to_string(),
        None if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the server closed the connection during the handshake: its port may be plaintext, \
             or it refused this client"
                .to_owned()
        }
        None => error.to_string(),
    }
}

/// The explanation of a server's refusal that reached the client only as text (an HTTP/2
/// error that carries the TLS alert's name, as when a TLS 1.3 server refuses the client's
/// certificate after the client's side of the handshake is done).
pub fn explain_alert_text(text: &str) -> Option<String> {
    let (_, rest) = text.split_once("received fatal alert: ")?;
    let name: String = rest
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    let alert = [
        AlertDescription::CertificateRequired,
        AlertDescription::UnknownCA,
        AlertDescription::BadCertificate,
        AlertDescription::CertificateExpired,
        AlertDescription::CertificateUnknown,
        AlertDescription::HandshakeFailure,
        AlertDescription::AccessDenied,
    ]
    .into_iter()
    .find(|alert| format!("{alert:?}") == name)?;
    Some(refused_by_server(alert))
}

fn refused_by_server(alert: AlertDescription) -> String {
    match alert {
        AlertDescription::CertificateRequired => {
            "the server requires a client certificate: give --cert and --key".to_owned()
        }
        AlertDescription::UnknownCA | AlertDescription::BadCertificate => format!(
            "the server refused this client's certificate ({alert:?}): it must be signed by the \
             CA the server trusts"
        ),
        AlertDescription::CertificateExpired => {
            "the server refused this client's certificate: it has expired".to_owned()
        }
        other => format!("the server ended the handshake ({other:?})"),
    }
}

/// Why a connection a server accepted failed its handshake, said for the server's log.
pub fn explain_server_error(error: &std::io::Error) -> String {
    match rustls_error(error) {
        Some(RustlsError::NoCertificatesPresented) => {
            "the client presented no certificate, and one is required".to_owned()
        }
        Some(RustlsError::InvalidCertificate(problem)) => {
            certificate_problem("the client's", problem, "the trusted CA file")
        }
        Some(RustlsError::InvalidMessage(_)) | Some(RustlsError::InappropriateMessage { .. }) => {
            "the client did not speak TLS".to_owned()
        }
        Some(RustlsError::AlertReceived(alert)) => {
            format!(
                "the client refused this member's certificate ({alert:?}): it may not trust this \
                 CA, or the certificate may not hold the name the client dialled"
            )
        }
        Some(other) => other.to_string(),
        None if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the client closed the connection during the handshake".to_owned()
        }
        None => error.to_string(),
    }
}
