//! Fuzzes `NodePath::parse` on arbitrary UTF-8 (inputs that are not UTF-8 are skipped).
//!
//! Properties: parsing never panics; a path that parses prints back exactly as given; a
//! non-root path is its parent's child of its own name, and its ancestors lead to the root.

#![no_main]

use coord_server::fsm::NodePath;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(path) = NodePath::parse(text) else {
        return;
    };
    assert_eq!(path.as_str(), text);
    assert_eq!(path.to_string(), text);
    let Some(parent) = path.parent() else {
        assert!(path.is_root(), "only the root has no parent: {text:?}");
        return;
    };
    assert_eq!(parent.child(path.name()), Ok(path.clone()), "{text:?}");
    assert!(path.is_within(&parent), "{text:?}");
    let ancestors = path.ancestors();
    assert_eq!(ancestors.first(), Some(&NodePath::root()), "{text:?}");
    assert_eq!(ancestors.last(), Some(&parent), "{text:?}");
});
