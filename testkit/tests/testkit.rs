//! The testkit against real servers: what other crates' tests rely on.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};

use turnpike_testkit::Postgres;

fn database_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

#[test]
fn postgres_gives_each_caller_its_own_database() {
    let pg = Postgres::start().unwrap();
    let first = pg.create_database("testkit");
    let second = pg.create_database("testkit");
    assert_ne!(first, second);
    let prefix = format!("postgres://postgres@127.0.0.1:{}/", pg.port());
    assert!(first.starts_with(&prefix), "{first}");

    for url in [&first, &second] {
        let db = database_of(url);
        assert_eq!(pg.psql(db, "select 1").unwrap().trim(), "1");
        assert_eq!(pg.psql(db, "select current_database()").unwrap().trim(), db);
    }

    // A table made in one database is invisible in the other.
    pg.psql(database_of(&first), "create table only_here (id int)").unwrap();
    let seen = pg.psql(database_of(&second), "select count(*) from pg_tables where tablename = 'only_here'").unwrap();
    assert_eq!(seen.trim(), "0");
}

#[test]
fn the_server_runs_with_test_settings_and_rejects_bad_sql() {
    let pg = Postgres::shared();
    let db = pg.create_database("settings");
    let db = database_of(&db);
    assert_eq!(pg.psql(db, "show fsync").unwrap().trim(), "off");
    assert_eq!(pg.psql(db, "show max_connections").unwrap().trim(), "200");
    assert_eq!(pg.psql(db, "show server_encoding").unwrap().trim(), "UTF8");
    let err = pg.psql(db, "select * from no_such_table").unwrap_err();
    assert!(err.to_string().contains("no_such_table"), "{err}");
}

#[test]
fn shared_is_started_once_and_handles_concurrent_creates() {
    let pg = Postgres::shared();
    assert!(std::ptr::eq(pg, Postgres::shared()));
    let urls: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| pg.create_database("parallel"))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut unique = urls.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), urls.len(), "{urls:?}");
}

#[test]
fn drop_stops_the_server_and_removes_its_files() {
    let pg = Postgres::start().unwrap();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, pg.port()));
    let dir = pg.dir().to_path_buf();
    assert!(TcpStream::connect(addr).is_ok());
    drop(pg);
    assert!(TcpStream::connect(addr).is_err(), "port {} still open", addr.port());
    assert!(!dir.exists(), "{} left behind", dir.display());
}
