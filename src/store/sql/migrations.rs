//! The embedded migrations, one list per engine.
//!
//! Built here rather than with `sqlx::migrate!`: sqlx's macros would compile sqlx (and tokio,
//! serde, time…) a second time for the host, about a third of a first build. The result is
//! the same migrator: each migration's version, description and checksum (SHA-384 of its SQL)
//! are what the macro derives from the file name and contents, so databases migrated by
//! earlier versions see the same migrations as applied.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

/// One migration file: its version, its description (the file name's words) and its SQL.
type File = (i64, &'static str, &'static str);

/// SQLite's migrations, in `migrations/sqlite`.
#[cfg(feature = "sqlite")]
pub(super) fn sqlite() -> Migrator {
    migrator(&[
        (
            1,
            "keys",
            include_str!("../../../migrations/sqlite/0001_keys.sql"),
        ),
        (
            2,
            "tenants",
            include_str!("../../../migrations/sqlite/0002_tenants.sql"),
        ),
        (
            3,
            "quota usage",
            include_str!("../../../migrations/sqlite/0003_quota_usage.sql"),
        ),
    ])
}

/// PostgreSQL's migrations, in `migrations/postgres`.
#[cfg(feature = "postgres")]
pub(super) fn postgres() -> Migrator {
    migrator(&[
        (
            1,
            "keys",
            include_str!("../../../migrations/postgres/0001_keys.sql"),
        ),
        (
            2,
            "tenants",
            include_str!("../../../migrations/postgres/0002_tenants.sql"),
        ),
        (
            3,
            "quota usage",
            include_str!("../../../migrations/postgres/0003_quota_usage.sql"),
        ),
    ])
}

fn migrator(files: &[File]) -> Migrator {
    let migrations = files
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of a migrations folder is listed, under the version and description sqlx
    /// reads from its name (`0003_quota_usage.sql` -> 3, "quota usage").
    fn lists_every_file(dir: &str, migrator: Migrator) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut files: Vec<(i64, String, String)> = std::fs::read_dir(path)
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let name = entry.file_name().into_string().unwrap();
                let (version, rest) = name.split_once('_').unwrap();
                let description = rest.trim_end_matches(".sql").replace('_', " ");
                let sql = std::fs::read_to_string(entry.path()).unwrap();
                (version.parse().unwrap(), description, sql)
            })
            .collect();
        files.sort();
        let listed: Vec<(i64, String, String)> = migrator
            .iter()
            .map(|m| (m.version, m.description.to_string(), m.sql.to_string()))
            .collect();
        assert_eq!(listed, files);
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_lists_every_file() {
        lists_every_file("migrations/sqlite", sqlite());
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_lists_every_file() {
        lists_every_file("migrations/postgres", postgres());
    }
}
