//! `NodePath`: a validated, absolute, `/`-separated node address.
//!
//! Invariant: a `NodePath` value always satisfies every rule in [`PathRule`]; the only ways to
//! build one are [`NodePath::parse`] and [`NodePath::root`]. The text is shared (`Arc<str>`), so
//! a clone costs a reference count, not an allocation: the tree's snapshot copy clones every
//! path.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest accepted path, in bytes.
pub const PATH_BYTES_MAX: usize = 4096;
/// Deepest accepted path, in segments.
pub const PATH_DEPTH_MAX: usize = 256;

/// The rule a rejected path broke; its `Display` is the text users see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathRule {
    Empty,
    NotAbsolute,
    TrailingSlash,
    EmptySegment,
    DotSegment,
    ControlCharacter,
    TooLong,
    TooDeep,
}

impl fmt::Display for PathRule {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            PathRule::Empty => "path is empty",
            PathRule::NotAbsolute => "path must start with '/'",
            PathRule::TrailingSlash => "path must not end with '/' (except the root)",
            PathRule::EmptySegment => "path must not contain an empty segment ('//')",
            PathRule::DotSegment => "path must not contain a '.' or '..' segment",
            PathRule::ControlCharacter => "path must not contain control characters",
            PathRule::TooLong => "path is longer than 4096 bytes",
            PathRule::TooDeep => "path has more than 256 segments",
        };
        formatter.write_str(text)
    }
}

/// A valid absolute node path such as `/services/db/leader`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodePath(Arc<str>);

impl NodePath {
    /// The root node `/`, which always exists.
    pub fn root() -> NodePath {
        NodePath(Arc::from("/"))
    }

    /// Validates `text` against every path rule.
    pub fn parse(text: &str) -> Result<NodePath, PathRule> {
        if text.is_empty() {
            return Err(PathRule::Empty);
        }
        if !text.starts_with('/') {
            return Err(PathRule::NotAbsolute);
        }
        if text.len() > PATH_BYTES_MAX {
            return Err(PathRule::TooLong);
        }
        if text.chars().any(char::is_control) {
            return Err(PathRule::ControlCharacter);
        }
        if text == "/" {
            return Ok(NodePath::root());
        }
        if text.ends_with('/') {
            return Err(PathRule::TrailingSlash);
        }
        let mut depth = 0;
        for segment in text[1..].split('/') {
            if segment.is_empty() {
                return Err(PathRule::EmptySegment);
            }
            if segment == "." || segment == ".." {
                return Err(PathRule::DotSegment);
            }
            depth += 1;
        }
        if depth > PATH_DEPTH_MAX {
            return Err(PathRule::TooDeep);
        }
        Ok(NodePath(Arc::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        &*self.0 == "/"
    }

    /// The parent path, or `None` for the root.
    pub fn parent(&self) -> Option<NodePath> {
        if self.is_root() {
            return None;
        }
        let cut = self.0.rfind('/').expect("a valid path contains '/'");
        if cut == 0 {
            Some(NodePath::root())
        } else {
            Some(NodePath(Arc::from(&self.0[..cut])))
        }
    }

    /// The last segment; empty for the root.
    pub fn name(&self) -> &str {
        let cut = self.0.rfind('/').expect("a valid path contains '/'");
        &self.0[cut + 1..]
    }

    /// The path of the child `name` (which must be one valid segment).
    pub fn child(&self, name: &str) -> Result<NodePath, PathRule> {
        if self.is_root() {
            NodePath::parse(&format!("/{name}"))
        } else {
            NodePath::parse(&format!("{}/{name}", self.0))
        }
    }

    /// Whether `self` is `ancestor` or lies below it.
    pub fn is_within(&self, ancestor: &NodePath) -> bool {
        if ancestor.is_root() || self == ancestor {
            return true;
        }
        self.0.starts_with(ancestor.as_str())
            && self.0.as_bytes().get(ancestor.0.len()) == Some(&b'/')
    }

    /// Ancestors from the root down to the parent, excluding `self`.
    pub fn ancestors(&self) -> Vec<NodePath> {
        let mut ancestors = Vec::new();
        let mut current = self.parent();
        while let Some(path) = current {
            current = path.parent();
            ancestors.push(path);
        }
        ancestors.reverse();
        ancestors
    }
}

impl fmt::Display for NodePath {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Sound because `NodePath` orders, compares and hashes exactly as its inner `str`.
impl std::borrow::Borrow<str> for NodePath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodePath {
    type Error = PathRule;

    fn try_from(text: String) -> Result<NodePath, PathRule> {
        NodePath::parse(&text)
    }
}

impl From<NodePath> for String {
    fn from(path: NodePath) -> String {
        path.0.as_ref().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_is_named() {
        assert_eq!(NodePath::parse(""), Err(PathRule::Empty));
        assert_eq!(NodePath::parse("a/b"), Err(PathRule::NotAbsolute));
        assert_eq!(NodePath::parse("/a/"), Err(PathRule::TrailingSlash));
        assert_eq!(NodePath::parse("/a//b"), Err(PathRule::EmptySegment));
        assert_eq!(NodePath::parse("/a/./b"), Err(PathRule::DotSegment));
        assert_eq!(NodePath::parse("/a/.."), Err(PathRule::DotSegment));
        assert_eq!(NodePath::parse("/a\nb"), Err(PathRule::ControlCharacter));
        assert_eq!(
            NodePath::parse(&format!("/{}", "x".repeat(5000))),
            Err(PathRule::TooLong)
        );
        assert_eq!(NodePath::parse(&"/a".repeat(300)), Err(PathRule::TooDeep));
        assert!(NodePath::parse("/a/.b/..c/é").is_ok());
    }

    #[test]
    fn parent_name_and_ancestry() {
        let path = NodePath::parse("/a/b/c").unwrap();
        assert_eq!(path.parent().unwrap().as_str(), "/a/b");
        assert_eq!(path.name(), "c");
        assert_eq!(
            NodePath::parse("/a").unwrap().parent(),
            Some(NodePath::root())
        );
        assert_eq!(NodePath::root().parent(), None);
        let ancestors: Vec<String> = path.ancestors().into_iter().map(String::from).collect();
        assert_eq!(ancestors, ["/", "/a", "/a/b"]);
        assert!(path.is_within(&NodePath::parse("/a").unwrap()));
        assert!(!NodePath::parse("/ab")
            .unwrap()
            .is_within(&NodePath::parse("/a").unwrap()));
        assert_eq!(NodePath::root().child("x").unwrap().as_str(), "/x");
    }
}
