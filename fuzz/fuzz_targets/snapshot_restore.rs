//! Fuzzes `Namespace::from_snapshot` on arbitrary bytes: a snapshot file or one received
//! from a leader.
//!
//! Properties: restoring never panics; a namespace that restores is valid, and its own
//! snapshot restores to an equal namespace, which encodes to the same bytes again.

#![no_main]

use coord_server::fsm::Namespace;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(namespace) = Namespace::from_snapshot(bytes) else {
        return;
    };
    if let Err(reason) = namespace.validate() {
        panic!("a restored namespace is invalid: {reason}");
    }
    let encoded = namespace.to_snapshot();
    let restored = match Namespace::from_snapshot(&encoded) {
        Ok(restored) => restored,
        Err(error) => panic!("a namespace's own snapshot does not restore: {error}"),
    };
    assert_eq!(restored, namespace);
    assert_eq!(
        restored.to_snapshot(),
        encoded,
        "equal states, different bytes"
    );
});
