//! placeholder
#[cfg(feature = "testkit")]
pub mod testkit;

#[cfg(test)]
mod tests {
    #[test]
    fn testkit_starts_a_server() {
        let Some(server) = crate::testkit::shared() else { return };
        let url = server.fresh_database();
        let db = url.rsplit('/').next().unwrap();
        assert_eq!(server.psql(db, "SELECT 1 + 1").unwrap(), "2");
        let mut own = crate::testkit::own().unwrap();
        own.stop();
        own.start_again().unwrap();
        assert_eq!(own.psql("postgres", "SELECT 3").unwrap(), "3");
    }
}
