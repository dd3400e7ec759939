//! `coordctl auth`: the cluster's auth policy: its status (on or off, who you are, and for an
//! admin the users, their tokens and the roles' grants), turning it on and off, and changing
//! users, roles, grants and tokens.
//!
//! This file only turns the command line into one `AuthChange` and says what was done; the
//! member checks the change (who may make it, which permission names exist) and prints nothing
//! itself: text and JSON go through `Printer`.
//!
//! Invariant: an issued token is written once, to stdout, and nowhere else (not in the
//! confirmation, not in an error), so `TOKEN=$(coordctl auth token issue root)` captures it.

use clap::Subcommand;
use coord_client::{AuthChange, Client, Error};

use crate::output::Printer;

#[derive(Subcommand)]
pub enum AuthCommand {
    /// Whether auth is enabled and who you are; to an admin, the users (with their roles and
    /// token ids) and the roles (with their grants).
    Status,
    /// Turn auth on: refused unless some user holds the `root` role (issue that user a token,
    /// or give it a client certificate, first).
    Enable,
    /// Turn auth off: every client may do everything again.
    Disable,
    /// Users: add, remove, grant or revoke a role.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Roles: add, remove, grant or revoke permissions on a path prefix.
    Role {
        #[command(subcommand)]
        command: RoleCommand,
    },
    /// Bearer tokens: issue one for a user (shown once), or revoke one.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user with no roles (a certificate's common name, or a token holder).
    Add { name: String },
    /// Remove a user and its tokens.
    Remove { name: String },
    /// Give user NAME the role ROLE (`root` is admin on `/`).
    GrantRole { name: String, role: String },
    /// Take the role ROLE from user NAME.
    RevokeRole { name: String, role: String },
}

#[derive(Subcommand)]
pub enum RoleCommand {
    /// Add a role with no grants.
    Add { name: String },
    /// Remove a role no user holds.
    Remove { name: String },
    /// Grant ROLE permissions on PREFIX (the path itself and everything under `PREFIX/`).
    Grant(GrantArgs),
    /// Take permissions on PREFIX from ROLE.
    Revoke(GrantArgs),
}

/// The arguments of `auth role grant` and `auth role revoke`.
#[derive(clap::Args)]
pub struct GrantArgs {
    role: String,
    /// The path prefix, e.g. `/app`.
    prefix: String,
    /// read, write, create, delete, admin: as separate arguments or comma-separated
    /// (`read,write`).
    #[arg(required = true, value_name = "PERMISSION")]
    permissions: Vec<String>,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Issue a bearer token for USER and print it (only this once); use it with `--token` or
    /// COORD_TOKEN.
    Issue {
        user: String,
        /// What the token is for (shown in `auth status`, unlike the token).
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Revoke one of USER's tokens by its id (as `auth status` lists it).
    Revoke { user: String, token_id: String },
}

/// `coordctl auth ...`: prints the status, or makes one change and confirms it (text) or prints
/// the policy after it (JSON).
pub async fn run(client: &Client, printer: &Printer, command: AuthCommand) -> anyhow::Result<i32> {
    let change = match command {
        AuthCommand::Status => {
            printer.auth_status(&client.auth_status().await?);
            return Ok(0);
        }
        AuthCommand::Enable => AuthChange::Enable,
        AuthCommand::Disable => AuthChange::Disable,
        AuthCommand::User { command } => user_change(command),
        AuthCommand::Role { command } => role_change(command)?,
        AuthCommand::Token { command } => token_change(command),
    };
    let confirmation = confirmation(&change);
    let issuing = matches!(change, AuthChange::TokenIssue { .. });
    let status = client.auth_change(change).await?;
    if issuing {
        if status.issued_token.is_empty() {
            return Err(Error::Internal {
                message: "the member answered without the issued token".into(),
            }
            .into());
        }
        printer.token_issued(&status);
    } else {
        printer.auth_changed(&confirmation, &status);
    }
    Ok(0)
}

fn user_change(command: UserCommand) -> AuthChange {
    match command {
        UserCommand::Add { name } => AuthChange::UserAdd { user: name },
        UserCommand::Remove { name } => AuthChange::UserRemove { user: name },
        UserCommand::GrantRole { name, role } => AuthChange::GrantRole { user: name, role },
        UserCommand::RevokeRole { name, role } => AuthChange::RevokeRole { user: name, role },
    }
}

fn role_change(command: RoleCommand) -> anyhow::Result<AuthChange> {
    Ok(match command {
        RoleCommand::Add { name } => AuthChange::RoleAdd { role: name },
        RoleCommand::Remove { name } => AuthChange::RoleRemove { role: name },
        RoleCommand::Grant(args) => AuthChange::Grant {
            permissions: permission_list(&args.permissions)?,
            role: args.role,
            prefix: args.prefix,
        },
        RoleCommand::Revoke(args) => AuthChange::Revoke {
            permissions: permission_list(&args.permissions)?,
            role: args.role,
            prefix: args.prefix,
        },
    })
}

fn token_change(command: TokenCommand) -> AuthChange {
    match command {
        TokenCommand::Issue { user, description } => AuthChange::TokenIssue { user, description },
        TokenCommand::Revoke { user, token_id } => AuthChange::TokenRevoke { user, token_id },
    }
}

/// The permission names in `arguments`, each of which may hold several separated by commas
/// (`read,write delete`); blanks around names are dropped. Which names exist is the member's
/// to say; an argument list that names none is a usage error.
fn permission_list(arguments: &[String]) -> anyhow::Result<Vec<String>> {
    let permissions: Vec<String> = arguments
        .iter()
        .flat_map(|argument| argument.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(
        !permissions.is_empty(),
        "no permission named (read, write, create, delete, admin)"
    );
    Ok(permissions)
}

/// What text output says once `change` is made.
fn confirmation(change: &AuthChange) -> String {
    match change {
        AuthChange::Enable => "auth enabled".to_owned(),
        AuthChange::Disable => "auth disabled".to_owned(),
        AuthChange::UserAdd { user } => format!("user {user} added"),
        AuthChange::UserRemove { user } => format!("user {user} removed"),
        AuthChange::GrantRole { user, role } => format!("role {role} granted to user {user}"),
        AuthChange::RevokeRole { user, role } => format!("role {role} revoked from user {user}"),
        AuthChange::RoleAdd { role } => format!("role {role} added"),
        AuthChange::RoleRemove { role } => format!("role {role} removed"),
        AuthChange::Grant {
            role,
            prefix,
            permissions,
        } => format!("role {role} granted {} on {prefix}", permissions.join(",")),
        AuthChange::Revoke {
            role,
            prefix,
            permissions,
        } => format!("role {role} revoked {} on {prefix}", permissions.join(",")),
        AuthChange::TokenIssue { user, .. } => format!("token issued for user {user}"),
        AuthChange::TokenRevoke { user, token_id } => {
            format!("token {token_id} of user {user} revoked")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn permissions_come_as_arguments_or_comma_separated() {
        let expected = strings(&["read", "write", "delete"]);
        let separate = strings(&["read", "write", "delete"]);
        assert_eq!(permission_list(&separate).expect("named"), expected);
        let joined = strings(&["read,write", "delete"]);
        assert_eq!(permission_list(&joined).expect("named"), expected);
        let spaced = strings(&[" read , write,", ",delete"]);
        assert_eq!(permission_list(&spaced).expect("named"), expected);
        assert!(permission_list(&strings(&[","])).is_err());
        assert!(permission_list(&strings(&[" "])).is_err());
    }

    #[test]
    fn a_grant_becomes_one_change_with_every_permission() {
        let command = RoleCommand::Grant(GrantArgs {
            role: "app".into(),
            prefix: "/app".into(),
            permissions: strings(&["read,write", "create"]),
        });
        let change = role_change(command).expect("valid");
        assert_eq!(
            change,
            AuthChange::Grant {
                role: "app".into(),
                prefix: "/app".into(),
                permissions: strings(&["read", "write", "create"]),
            }
        );
        assert_eq!(
            confirmation(&change),
            "role app granted read,write,create on /app"
        );
    }
}
