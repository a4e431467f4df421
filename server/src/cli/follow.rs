//! The follow-up commands the CLI prints (`ax workflow approve ID STEP`,
//! `ax workflow resume ID`, …) start with the `--db` and `--agents` this
//! process was given on its command line, so that a command copied from its
//! output reaches the same database and the same providers.

use std::ffi::OsString;
use std::path::Path;
use std::sync::OnceLock;

static AX: OnceLock<String> = OnceLock::new();

/// Remember how this process was pointed at its database and agents file.
pub(super) fn remember(db: Option<&str>, agents: Option<&Path>) {
    let _ = AX.set(prefix(db, agents, std::env::var_os("AX_AGENTS")));
}

/// `ax`, with the options [`remember`]ed.
pub(super) fn ax() -> &'static str {
    AX.get().map_or("ax", String::as_str)
}

/// `ax [--db DB] [--agents FILE]`. An agents file that came from `AX_AGENTS`
/// is left out: the environment that set it is the one the command is
/// copied into.
fn prefix(db: Option<&str>, agents: Option<&Path>, env_agents: Option<OsString>) -> String {
    let mut cmd = String::from("ax");
    if let Some(db) = db {
        cmd.push_str(" --db ");
        cmd.push_str(&shell_word(&without_password(db)));
    }
    if let Some(agents) = agents
        && env_agents.as_deref() != Some(agents.as_os_str())
    {
        cmd.push_str(" --agents ");
        cmd.push_str(&shell_word(&agents.to_string_lossy()));
    }
    cmd
}

/// A word the shell reads back as `s`.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@%+=,~".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A database URL with its password (if any) replaced by `PASSWORD`: output
/// ends up in logs and terminals that others read.
fn without_password(db: &str) -> String {
    let Some((scheme, rest)) = db.split_once("://") else {
        return db.to_owned();
    };
    let (authority, tail) = rest
        .find(['/', '?'])
        .map_or((rest, ""), |i| rest.split_at(i));
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return db.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:PASSWORD@{host}{tail}"),
        None => db.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_only_when_the_shell_would_change_them() {
        assert_eq!(shell_word("runs/t.db"), "runs/t.db");
        assert_eq!(
            shell_word("postgres://ax@db:5432/ax"),
            "postgres://ax@db:5432/ax"
        );
        assert_eq!(shell_word("my runs/t.db"), "'my runs/t.db'");
        assert_eq!(shell_word("it's.db"), r"'it'\''s.db'");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("$HOME/x"), "'$HOME/x'");
    }

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            without_password("postgres://ax:s3cret@db.example:5432/ax?sslmode=require"),
            "postgres://ax:PASSWORD@db.example:5432/ax?sslmode=require"
        );
        assert_eq!(
            without_password("postgres://ax@db/ax"),
            "postgres://ax@db/ax"
        );
        assert_eq!(without_password("runs/a@b.db"), "runs/a@b.db");
        assert_eq!(
            without_password("postgresql://u:p@w@h/d"),
            "postgresql://u:PASSWORD@h/d"
        );
    }

    #[test]
    fn the_prefix_carries_what_the_command_line_gave() {
        assert_eq!(prefix(None, None, None), "ax");
        assert_eq!(
            prefix(Some("my runs/t.db"), Some(Path::new("agents.toml")), None),
            "ax --db 'my runs/t.db' --agents agents.toml"
        );
        assert_eq!(
            prefix(None, Some(Path::new("a.toml")), Some("a.toml".into())),
            "ax",
            "an agents file from AX_AGENTS is left to the environment"
        );
    }
}
