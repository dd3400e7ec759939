//! Authorization: who may do what to which nodes. A pure model: no I/O, no tokio, no tonic,
//! no clock; randomness and time arrive as arguments.
//!
//! ```text
//!  client cert CN ──┐                        ┌─ Ok(())
//!                   ├─► Caller ─► AuthPolicy::check(caller, permission, path)
//!  bearer token ────┘  (authenticate_token)  └─ Err(Denied: who lacks what, where)
//! ```
//!
//! The policy ([`AuthPolicy`]) holds users, roles and one switch. A user holds roles; a role
//! holds grants; a [`Grant`] gives a [`PermissionSet`] on a prefix of the tree. Permissions:
//! - `read`: get a node, test that it exists, list its children, watch it, check a fence on it;
//! - `write`: set a node's data;
//! - `create`: create a node at the path;
//! - `delete`: delete the node at the path;
//! - `admin`: all of the above on the prefix; on `/` also cluster administration, closing other
//!   clients' sessions and changing the auth policy itself.
//!
//! Invariants (each stated and tested where it lives):
//! - a grant on `P` covers `P` and the paths under `P + "/"`, never a longer sibling
//!   (`/app` covers `/app/x`, not `/apple`); `/` covers everything (`grant.rs`);
//! - `admin` implies the other permissions on the same prefix (`permission.rs`);
//! - the role `root` always exists and is exactly admin on `/` (`role.rs`);
//! - while enabled, some user holds `root`, so no change can lock everyone out; while
//!   disabled, everything is allowed; enabled, anonymous callers are denied (`policy.rs`);
//! - only the SHA-256 of a token is stored, and hashes are compared in constant time
//!   (`token.rs`);
//! - a change is a pure function returning a new policy or a typed [`PolicyError`].
//!
//! Boundary: this module never reads a certificate, a request or a clock; whoever serves
//! requests maps its identity to a [`Caller`] and a [`Denied`] to its own error.

mod caller;
mod denied;
mod error;
mod grant;
mod name;
mod permission;
mod policy;
mod role;
mod token;
mod user;

pub use caller::Caller;
pub use denied::Denied;
pub use error::{NameKind, PolicyError, NAME_CHARS_MAX};
pub use grant::{prefix_covers, validate_prefix, Grant};
pub use name::validate_name;
pub use permission::{Permission, PermissionSet};
pub use policy::{AuthPolicy, ROLES_MAX, USERS_MAX};
pub use role::{Role, GRANTS_PER_ROLE_MAX, ROOT_ROLE};
pub use token::{
    constant_time_eq, generate_token, token_id, TokenRecord, TOKEN_DESCRIPTION_BYTES_MAX,
    TOKEN_ID_BYTES, TOKEN_PREFIX, TOKEN_SECRET_BYTES,
};
pub use user::{User, ROLES_PER_USER_MAX, TOKENS_PER_USER_MAX};
