//! Versioned schema migrations, plain `.sql` files applied in order at start-up.

use rusqlite_migration::{M, Migrations};

const MIGRATIONS: &[M<'static>] = &[
    M::up(include_str!("migrations/0001_initial.sql")),
    M::up(include_str!("migrations/0002_plugins.sql")),
    M::up(include_str!("migrations/0003_plugin_log_level.sql")),
    M::up(include_str!("migrations/0004_scheduling.sql")),
    M::up(include_str!("migrations/0005_console_sessions.sql")),
    M::up(include_str!("migrations/0006_listeners.sql")),
    M::up(include_str!("migrations/0007_secrets_at_rest.sql")),
    M::up(include_str!("migrations/0008_attempt_requests.sql")),
    M::up(include_str!("migrations/0009_plugin_compiles.sql")),
    M::up(include_str!("migrations/0010_plugin_instances.sql")),
    M::up(include_str!("migrations/0011_retention_indexes.sql")),
];

/// The ordered list of schema migrations.
pub fn migrations() -> Migrations<'static> {
    Migrations::from_slice(MIGRATIONS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_validate() {
        super::migrations()
            .validate()
            .expect("migrations must apply cleanly");
    }
}
