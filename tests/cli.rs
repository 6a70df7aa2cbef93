//! The `rollcall` binary itself: user administration, start-up checks, graceful shutdown.

mod support;

use std::io::Write;
use std::process::Stdio;

use support::{
    Backend, Gql, PASSWORD, ServerProcess, TestDb, assert_code, output_or_kill, rollcall_command,
    run_or_kill,
};

fn run_cli(database_url: &str, args: &[&str], stdin: &str) -> std::process::Output {
    let child = spawn_cli(database_url, args, stdin);
    output_or_kill(child, &format!("rollcall {}", args.join(" ")))
}

/// `rollcall ARGS` started with `stdin` written to it, its output piped.
fn spawn_cli(database_url: &str, args: &[&str], stdin: &str) -> std::process::Child {
    let mut child = rollcall_command(database_url, &[])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rollcall");
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child
}

/// What `child` (a server, its stderr piped) writes up to the line saying it listens, and
/// whether that line came: each line is waited for at most a minute, so a server that never
/// listens fails its test rather than hanging it.
fn lines_until_listening(child: &mut std::process::Child) -> (Vec<String>, bool) {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("stderr piped");
    let (lines, read) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    while let Ok(line) = read.recv_timeout(std::time::Duration::from_secs(60)) {
        let listening = line.contains("listening on");
        seen.push(line);
        if listening {
            return (seen, true);
        }
    }
    (seen, false)
}

/// What `rollcall serve` on `address` logs up to its listening line, and whether it got there;
/// the server is stopped then.
fn start_up_lines(database_url: &str, env: &[(&str, &str)], address: &str) -> (Vec<String>, bool) {
    let mut child = rollcall_command(database_url, env)
        .args(["--listen", address, "serve"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rollcall");
    let seen = lines_until_listening(&mut child);
    let _ = child.kill();
    let _ = child.wait();
    seen
}

/// A command that must have succeeded; its error output says why not.
fn assert_succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `rollcall user create` with [`PASSWORD`] on stdin.
fn create_user(database_url: &str, username: &str, role: &str) -> std::process::Output {
    let email = format!("{username}@example.com");
    run_cli(
        database_url,
        &[
            "user",
            "create",
            "--username",
            username,
            "--email",
            &email,
            "--role",
            role,
        ],
        &format!("{PASSWORD}\n"),
    )
}

async fn create_and_promote(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let out = create_user(&db.url, "alice", "owner");
    assert_succeeded(&out);
    let out = create_user(&db.url, "bob", "admin");
    assert_succeeded(&out);

    // A second owner is refused; invalid input names the fields.
    let out = create_user(&db.url, "carol", "owner");
    assert!(!out.status.success());
    let out = run_cli(
        &db.url,
        &["user", "create", "--username", "x", "--email", "nope"],
        "short\n",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("username") && stderr.contains("email") && stderr.contains("password"),
        "{stderr}"
    );

    let server = ServerProcess::start(&db.url, &[]);
    assert_eq!(server.login_as("alice").await.role, "OWNER");
    assert_eq!(server.login_as("bob").await.role, "ADMIN");

    // The name is read as `user(username:)` reads it: trimmed, in any case or width.
    let out = run_cli(&db.url, &["user", "promote-owner", " ＢＯＢ"], "");
    assert_succeeded(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "bob is now the owner and alice an admin; the sessions of both ended\n"
    );
    assert_eq!(server.login_as("bob").await.role, "OWNER");
    assert_eq!(server.login_as("alice").await.role, "ADMIN");
    let out = run_cli(&db.url, &["user", "promote-owner", "bob"], "");
    assert_succeeded(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "bob is the owner already\n"
    );

    let out = run_cli(&db.url, &["user", "promote-owner", "nobody"], "");
    assert!(!out.status.success());

    assert!(server.terminate().success(), "SIGTERM is a clean shutdown");

    // SIGHUP (the terminal closed) too, where its default would end the process at once.
    let server = ServerProcess::start(&db.url, &[]);
    assert_eq!(server.login_as("bob").await.role, "OWNER");
    let status = server.signal("HUP");
    assert!(status.success(), "SIGHUP is a clean shutdown: {status:?}");

    // Started with it ignored, as `nohup` starts a process, it stays ignored.
    let mut command = support::rollcall_command(&db.url, &[]);
    // SAFETY: between fork and exec, a single async-signal-safe call.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let server = ServerProcess::spawn_command(command).listening();
    server.send("HUP");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(server.login_as("bob").await.role, "OWNER", "still serving");
    assert!(server.terminate().success());
}

/// The command line signs no tokens, so `keys rotate` records on no key how long tokens live:
/// only servers do, with their own token lifetime.
#[tokio::test]
async fn the_keys_command_records_no_token_lifetime() {
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    assert_succeeded(&run_cli(&db.url, &["migrate"], ""));
    for _ in 0..2 {
        let out = run_or_kill(
            rollcall_command(&db.url, &[("ROLLCALL_ACCESS_TTL", "1d")]).args(["keys", "rotate"]),
            "rollcall keys rotate",
        );
        assert_succeeded(&out);
    }
    let row = db
        .query_one("SELECT count(*), count(signs_until) FROM signing_keys")
        .await;
    let keys = row.try_get_by_index::<i64>(0).expect("keys");
    let recorded = row.try_get_by_index::<i64>(1).expect("recorded");
    assert_eq!((keys, recorded), (3, 0));
}

/// `user create` and `user import` create the schema in an empty database (and say so); the
/// commands acting on what a database holds refuse one without it, as a mistyped
/// DATABASE_URL. None of them upgrades a database an older release migrated, behind the
/// servers running on it: that is `rollcall migrate`'s.
async fn commands_migrate_only_an_empty_database(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    for args in [
        &["keys", "rotate", "--revoke"][..],
        &["user", "promote-owner", "alice"],
        &["user", "reset-totp", "alice"],
    ] {
        let out = run_cli(&db.url, args, "");
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("has no rollcall schema"),
            "{args:?}: {stderr}"
        );
    }
    if backend == Backend::Sqlite {
        assert!(!db.sqlite_file().exists(), "a SQLite file was left behind");
        // Nor is an empty file made a database.
        std::fs::write(db.sqlite_file(), b"").expect("an empty file");
        let out = run_cli(&db.url, &["keys", "rotate"], "");
        assert!(!out.status.success());
        let file = std::fs::metadata(db.sqlite_file()).expect("the file");
        assert_eq!(file.len(), 0, "the empty file was written to");
        std::fs::remove_file(db.sqlite_file()).expect("removed");
    }
    let conn = db.connect().await;
    let schema = sea_orm::ConnectionTrait::query_one_raw(
        &conn,
        sea_orm::Statement::from_string(
            sea_orm::ConnectionTrait::get_database_backend(&conn),
            "SELECT count(*) FROM seaql_migrations",
        ),
    )
    .await;
    assert!(schema.is_err(), "no schema was created: {schema:?}");
    drop(conn);
    let out = create_user(&db.url, "alice", "owner");
    assert_succeeded(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no rollcall schema yet"), "{stderr}");
    // As an older release would have left it: the newest migration not applied.
    let conn = sea_orm::Database::connect(db.url.as_str())
        .await
        .expect("connect");
    let forget = "DELETE FROM seaql_migrations WHERE version = \
        (SELECT max(version) FROM seaql_migrations)";
    sea_orm::ConnectionTrait::execute_unprepared(&conn, forget)
        .await
        .expect("forget a migration");
    let count = "SELECT count(*) FROM seaql_migrations";
    let applied = |conn| async move {
        let row = sea_orm::ConnectionTrait::query_one_raw(
            conn,
            sea_orm::Statement::from_string(
                sea_orm::ConnectionTrait::get_database_backend(conn),
                count,
            ),
        )
        .await
        .expect("count")
        .expect("a row");
        row.try_get_by_index::<i64>(0).expect("a number")
    };
    let before = applied(&conn).await;
    for args in [&["keys", "rotate"][..], &["user", "reset-totp", "alice"]] {
        let out = run_cli(&db.url, args, "");
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("rollcall migrate"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("the database "),
            "names the database: {stderr}"
        );
    }
    assert_eq!(applied(&conn).await, before, "nothing migrated");
    let said = |out: std::process::Output| {
        assert_succeeded(&out);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let migrated = said(run_cli(&db.url, &["migrate"], ""));
    assert!(migrated.contains("1 migration applied"), "{migrated}");
    assert_eq!(applied(&conn).await, before + 1);
    let again = said(run_cli(&db.url, &["migrate"], ""));
    assert!(again.contains("no migration to apply"), "{again}");
    assert_succeeded(&run_cli(&db.url, &["user", "reset-totp", "alice"], ""));
    // A newer release's migration: every command, and the server, says so and changes nothing.
    sea_orm::ConnectionTrait::execute_unprepared(
        &conn,
        "INSERT INTO seaql_migrations VALUES ('m29991231_000001_later', 0)",
    )
    .await
    .expect("a newer migration");
    for args in [
        &["user", "reset-totp", "alice"][..],
        &["migrate"],
        &["serve"],
    ] {
        let out = run_cli(&db.url, args, "");
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("holds migrations this release does not know"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(applied(&conn).await, before + 2);
    let _ = conn.close().await;
}

#[tokio::test]
async fn sqlite_commands_migrate_only_an_empty_database() {
    commands_migrate_only_an_empty_database(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_commands_migrate_only_an_empty_database() {
    commands_migrate_only_an_empty_database(Backend::Postgres).await;
}

#[tokio::test]
async fn sqlite_create_and_promote() {
    create_and_promote(Backend::Sqlite).await;
}

/// Makes `path` unwritable to this process until the guard is dropped, however the test ends,
/// so that it can be removed: root writes files whatever their mode, so as root it is made
/// immutable instead.
fn unwritable(path: &std::path::Path) -> impl Drop {
    use std::os::unix::fs::PermissionsExt;

    struct Protected(std::path::PathBuf, bool, std::fs::Permissions);
    impl Drop for Protected {
        fn drop(&mut self) {
            if self.1 {
                let _ = std::process::Command::new("chattr")
                    .arg("-i")
                    .arg(&self.0)
                    .status();
            } else {
                let _ = std::fs::set_permissions(&self.0, self.2.clone());
            }
        }
    }

    // SAFETY: no arguments, no side effects.
    let root = unsafe { libc::geteuid() } == 0;
    let before = std::fs::metadata(path).expect("metadata").permissions();
    let guard = Protected(path.to_owned(), root, before);
    if root {
        let status = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .expect("run chattr");
        assert!(status.success(), "chattr +i {}", path.display());
    } else {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    }
    guard
}

/// A SQLite file this process may not write would be opened read-only without a word, and
/// every login would fail: start-up refuses it, naming the file. So is one out of WAL mode (a
/// copy made by `VACUUM INTO`), which SQLite itself would refuse in its own words.
#[tokio::test]
async fn an_unwritable_sqlite_file_is_refused_at_start_up() {
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    assert_succeeded(&run_cli(&db.url, &["migrate"], ""));
    let file = db.sqlite_file();
    for journal in ["WAL", "DELETE"] {
        let connection = db.connect().await;
        let mode = format!("PRAGMA journal_mode = {journal}");
        sea_orm::ConnectionTrait::execute_unprepared(&connection, &mode)
            .await
            .expect("journal mode");
        connection.close().await.expect("closed");
        let _protected = unwritable(&file);
        for command in [&["serve"][..], &["user", "reset-totp", "nobody"]] {
            let refused = run_or_kill(
                rollcall_command(&db.url, &[("ROLLCALL_LISTEN", "127.0.0.1:0")]).args(command),
                "rollcall on a file it may not write",
            );
            assert!(!refused.status.success(), "{command:?}");
            let said = String::from_utf8_lossy(&refused.stderr);
            let expected = format!("this process may not read and write {}", file.display());
            assert!(said.contains(&expected), "{journal} {command:?}: {said}");
        }
    }
    // A file not there yet, in a directory where it may not be made: the directory is named.
    let Some(fresh) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let directory = fresh
        .sqlite_file()
        .parent()
        .expect("a directory")
        .to_owned();
    let _protected = unwritable(&directory);
    let refused = run_or_kill(
        rollcall_command(&fresh.url, &[]).arg("migrate"),
        "rollcall migrate in a directory it may not write",
    );
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    let expected = format!(
        "this process may not read and write {}",
        directory.display()
    );
    assert!(said.contains(&expected), "{said}");
}

/// A SQLite file replaced under a running server leaves that server's `-wal` and `-shm` files
/// at the path when it stops, which the next start would replay into the new file: the stop
/// says so.
#[tokio::test]
async fn a_stop_after_the_sqlite_file_was_replaced_says_what_it_leaves() {
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let server = ServerProcess::start(&db.url, &[]);
    server.register("alice").await;
    let file = db.sqlite_file();
    let restored = file.with_file_name("restored.db");
    std::fs::copy(&file, &restored).expect("a copy");
    std::fs::rename(&restored, &file).expect("put in place");
    server.send("TERM");
    let lines = server.log_lines_until("stopped");
    let warned = lines
        .iter()
        .find(|line| line.contains("was removed or replaced while this server ran"));
    let warned = warned.unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(
        warned.contains("ERROR") && warned.contains(&*file.to_string_lossy()),
        "{warned}"
    );
    let mut journal = file.clone().into_os_string();
    journal.push("-wal");
    assert!(std::path::Path::new(&journal).exists(), "warned of no file");
}

/// A file to be made in a directory that is not there is told so, not as a matter of
/// permissions; one to be made through a link is judged where the link leads.
#[tokio::test]
async fn a_sqlite_file_not_made_yet_is_judged_where_it_would_be() {
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let file = db.sqlite_file();
    let missing = file.with_file_name("not-there").join("rollcall.db");
    let url = format!("sqlite://{}?mode=rwc", missing.display());
    let refused = run_or_kill(
        rollcall_command(&url, &[]).arg("migrate"),
        "rollcall migrate",
    );
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("does not exist: create it first"), "{said}");
    assert!(!said.contains("may not read and write"), "{said}");

    let links = file.with_file_name("links");
    std::fs::create_dir(&links).expect("a directory for the link");
    let link = links.join("linked.db");
    std::os::unix::fs::symlink(&file, &link).expect("symlink");
    let _protected = unwritable(&links);
    let url = format!("sqlite://{}?mode=rwc", link.display());
    assert_succeeded(&run_or_kill(
        rollcall_command(&url, &[]).arg("migrate"),
        "rollcall migrate through a link to a file not made yet",
    ));
    assert!(file.exists());
}

/// Through a symbolic link, SQLite writes the file the link leads to and keeps its `-wal`
/// and `-shm` files beside that one: the link's own directory need not be writable.
#[tokio::test]
async fn a_sqlite_file_reached_through_a_link_is_judged_where_it_is() {
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    assert_succeeded(&run_cli(&db.url, &["migrate"], ""));
    let links = db.sqlite_file().with_file_name("links");
    std::fs::create_dir(&links).expect("a directory for the link");
    let link = links.join("linked.db");
    std::os::unix::fs::symlink(db.sqlite_file(), &link).expect("symlink");
    let _protected = unwritable(&links);
    let url = format!("sqlite://{}", link.display());
    let server = ServerProcess::start(&url, &[]);
    server.register("alice").await;
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn postgres_create_and_promote() {
    create_and_promote(Backend::Postgres).await;
}

/// `user import` brings accounts over with their hashes: they log in with their old
/// passwords. A refused import names each bad row and imports none of them.
async fn import_users(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    // Into a database without an owner, the import says how to make one, as `user create` does.
    let first = serde_json::json!([{
        "username": "zoe", "email": "zoe@example.com", "passwordHash": password_hash(),
    }]);
    let out = run_cli(&db.url, &["user", "import", "-"], &first.to_string());
    assert_succeeded(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the database has no owner yet"), "{stderr}");
    assert_succeeded(&create_user(&db.url, "alice", "owner"));
    let hash = rollcall::auth::password::Passwords::new(1)
        .expect("a hashing thread")
        .hash(PASSWORD.to_owned())
        .await
        .expect("hashed");
    let row = |username: &str, role: &str| {
        serde_json::json!({
            "username": username,
            "email": format!("{username}@example.com"),
            "passwordHash": hash,
            "firstName": "Imported",
            "role": role,
        })
    };
    let refused = serde_json::json!([
        row("okay", "STANDARD"),
        row("alice", "STANDARD"),
        {"username": "x", "email": "nope", "passwordHash": "plain"},
        row("boss", "OWNER"),
        row("rooty", "root"),
        {"username": "garbled", "email": "garbled@example.com", "passwordHash": hash,
         "createdBy": "garbage"},
        7,
        {"username": "nick", "email": "nick@example.com", "passwordHash": hash, "nickname": "n"},
        {"username": 5, "email": "five@example.com", "passwordHash": hash},
        {"email": "lone@example.com", "passwordHash": null},
    ]);
    let out = run_cli(&db.url, &["user", "import", "-"], &refused.to_string());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Values that do not parse are named by row and field beside the other rows' errors.
    for named in [
        "2.username",
        "2.email",
        "2.passwordHash is neither an argon2 PHC string nor a bcrypt hash",
        "3.role",
        "4.role must be ADMIN or STANDARD",
        "5.createdBy must be a user's id",
        "6 is not a JSON object",
        "7.nickname is no field of a user",
        "8.username must be a string",
        "9.username is required",
        "9.passwordHash is required",
    ] {
        assert!(stderr.contains(named), "{named}: {stderr}");
    }
    // In row order, a whole row's error among its neighbours'.
    let at = |text: &str| stderr.find(text);
    assert!(
        at("5.createdBy") < at("6 is not") && at("6 is not") < at("7.nickname"),
        "{stderr}"
    );
    for valid in ["0.username", "0.email", "0.passwordHash"] {
        assert!(!stderr.contains(valid), "the valid row is named: {stderr}");
    }
    for (text, said) in [
        ("{\"username\": 1}", "not a JSON array of users"),
        // Half an emoji, as a name cut short in another system's export leaves it.
        (
            "[{\"username\": \"ana\", \"firstName\": \"Ana \\ud83d\"}]",
            "not valid JSON: unexpected end of hex escape at line 1 column 46",
        ),
    ] {
        let out = run_cli(&db.url, &["user", "import", "-"], text);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(said), "{stderr}");
    }

    // A field given twice in a row is refused whole, not read as its last value.
    let twice = format!(
        "[{{\"username\": \"j2\", \"username\": \"j3\", \"email\": \"j@example.com\", \
         \"passwordHash\": {}}}]",
        serde_json::json!(hash)
    );
    let out = run_cli(&db.url, &["user", "import", "-"], &twice);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("0.username is given twice in its row"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A byte-order mark before the JSON, as Windows tools write, is no content.
    let out = run_cli(&db.url, &["user", "import", "-"], "\u{feff}[]");
    assert_succeeded(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "imported 0 users"
    );
    // Many bad rows: the first twenty in row order, and how many more.
    let many: Vec<_> = (0..30)
        .map(|i| serde_json::json!({"username": format!("user{i}"), "email": "nope", "passwordHash": hash}))
        .collect();
    let out = run_cli(
        &db.url,
        &["user", "import", "-"],
        &serde_json::json!(many).to_string(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2.email must") && stderr.contains("and 10 more"),
        "{stderr}"
    );
    assert!(stderr.find("2.email") < stderr.find("10.email"), "{stderr}");
    assert!(!stderr.contains("20.email"), "{stderr}");

    // Roles in either case, as GraphQL writes them or as `--role` takes them; dave's hash is
    // another system's, far cheaper than this server's.
    let cheap = argon2::PasswordHasher::hash_password(
        &argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(8, 1, 1, None).expect("params"),
        ),
        PASSWORD.as_bytes(),
    )
    .expect("hashed")
    .to_string();
    let mut dave = row("dave", "STANDARD");
    dave["passwordHash"] = serde_json::json!(cheap);
    let mut erin = row("erin", "STANDARD");
    erin["passwordHash"] = serde_json::json!(cheap);
    // bcrypt, as other stores keep passwords: `$2b$`, and PHP's `$2y$` of the same algorithm.
    let bcrypt = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
    let mut frank = row("frank", "STANDARD");
    frank["passwordHash"] = serde_json::json!(bcrypt);
    let mut gina = row("gina", "STANDARD");
    gina["passwordHash"] = serde_json::json!(bcrypt.replacen("$2b$", "$2y$", 1));
    // Past the cost bound, a bcrypt hash is refused like any other that cannot be checked.
    let mut costly = row("henry", "STANDARD");
    costly["passwordHash"] = serde_json::json!(bcrypt.replacen("$04$", "$16$", 1));
    let out = run_cli(
        &db.url,
        &["user", "import", "-"],
        &serde_json::json!([costly]).to_string(),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("0.passwordHash is a bcrypt hash of a cost outside 4 to 14"),
        "{stderr}"
    );
    let accepted = serde_json::json!([
        row("bob", "Admin"),
        row("carol", "standard"),
        dave,
        erin,
        frank,
        gina
    ]);
    let out = run_cli(&db.url, &["user", "import", "-"], &accepted.to_string());
    assert_succeeded(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "imported 6 users"
    );
    let server = ServerProcess::start(&db.url, &[]);
    // dave's first login stores his password again under this server's parameters.
    let db = &db;
    let stored_hash = |name: &'static str| async move {
        let row = db
            .query_one(&format!(
                "SELECT password_hash FROM users WHERE username = '{name}'"
            ))
            .await;
        row.try_get_by_index::<String>(0).expect("hash")
    };
    assert_eq!(stored_hash("dave").await, cheap);
    server.login_as("dave").await;
    let rehashed = stored_hash("dave").await;
    assert!(rehashed.contains("m=19456,t=2,p=1"), "{rehashed}");
    server.login_as("dave").await;
    // So do the bcrypt accounts'; a wrong password is wrong under bcrypt too.
    for name in ["frank", "gina"] {
        assert_code(
            &server.login(name, "not the password").await,
            "UNAUTHENTICATED",
        );
        assert!(stored_hash(name).await.starts_with("$2"), "{name}");
        server.login_as(name).await;
        let rehashed = stored_hash(name).await;
        assert!(rehashed.starts_with("$argon2id$"), "{name}: {rehashed}");
        server.login_as(name).await;
    }
    // First logins at once each store the password again; each is still the right password.
    let logins = (0..4).map(|_| server.login("erin", PASSWORD));
    for body in futures::future::join_all(logins).await {
        support::assert_ok(&body);
    }
    assert_eq!(server.login_as("bob").await.role, "ADMIN");
    let carol = server.login_as("carol").await;
    assert_eq!(carol.role, "STANDARD");
    let body = server
        .gql(
            Some(&carol.access),
            "{ me { firstName } }",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(body["data"]["me"]["firstName"], "Imported", "{body}");
    // The refused import left nothing behind.
    assert_code(&server.login("okay", PASSWORD).await, "UNAUTHENTICATED");
    // Names in use, now by an imported account.
    let out = run_cli(&db.url, &["user", "import", "-"], &accepted.to_string());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0.username"));
    assert!(server.terminate().success());
}

#[tokio::test]
async fn sqlite_import_users() {
    import_users(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_import_users() {
    import_users(Backend::Postgres).await;
}

/// Waits until a statement of `conn`'s PostgreSQL database waits for a lock, at most 30 s.
async fn wait_for_a_lock_wait(conn: &sea_orm::DatabaseConnection, never: &str) {
    wait_for_lock_waits(conn, 1, never).await;
}

/// Waits until `n` statements of `conn`'s database wait for a lock.
async fn wait_for_lock_waits(conn: &sea_orm::DatabaseConnection, n: i64, never: &str) {
    use sea_orm::ConnectionTrait;
    let waiting = async || {
        conn.query_one_raw(sea_orm::Statement::from_string(
            conn.get_database_backend(),
            support::LOCK_WAITS,
        ))
        .await
        .expect("query")
        .and_then(|row| row.try_get_by_index::<i64>(0).ok())
        .is_some_and(|count| count >= n)
    };
    support::eventually_every(
        never,
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(50),
        waiting,
    )
    .await;
}

/// PostgreSQL checks an import's names without a lock on the table, so another writer can
/// take one before the rows go in: the refusal still names the row and the field.
#[tokio::test]
async fn postgres_import_names_a_row_whose_name_was_taken_meanwhile() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    assert_succeeded(&create_user(&db.url, "alice", "owner"));
    let conn = sea_orm::Database::connect(db.url.as_str())
        .await
        .expect("connect");
    // Another writer's row, uncommitted: the import's check cannot see it, and its insert
    // waits on the unique index until this commits.
    let writer = conn.begin().await.expect("begin");
    writer
        .execute_unprepared(
            "INSERT INTO users (id, username, username_key, email, password_hash, role, \
             created_at, updated_at) SELECT gen_random_uuid(), 'racer', 'racer', \
             'zed@example.com', password_hash, 'STANDARD', now(), now() FROM users",
        )
        .await
        .expect("insert");
    let hash = rollcall::auth::password::Passwords::new(1)
        .expect("a hashing thread")
        .hash(PASSWORD.to_owned())
        .await
        .expect("hashed");
    let rows = serde_json::json!([
        {"username": "yves", "email": "yves@example.com", "passwordHash": hash},
        {"username": "zed", "email": "zed@example.com", "passwordHash": hash},
    ]);
    let child = spawn_cli(&db.url, &["user", "import", "-"], &rows.to_string());
    wait_for_a_lock_wait(&conn, "the import never waited on the index").await;
    writer.commit().await.expect("commit");
    let out = output_or_kill(child, "rollcall user import");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1.email"), "{stderr}");
    assert!(
        !stderr.contains("0.email") && !stderr.contains("0.username"),
        "{stderr}"
    );
    let _ = conn.close().await;
}

/// Upgrading from a release that counted unknown logins under the text typed (at times a
/// password) deletes those counts; an account's stays.
#[tokio::test]
async fn the_upgrade_forgets_unknown_logins_kept_as_typed() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(db) = TestDb::create(backend).await else {
            continue;
        };
        assert_succeeded(&run_cli(&db.url, &["migrate"], ""));
        db.execute(
            "INSERT INTO credential_failures (subject, failures, locked_until, updated_at) \
             VALUES ('login:hunter2-typed-as-a-login', 3, 0, 0), ('user:someone', 2, 0, 0)",
        )
        .await;
        // As the release before this one left it.
        db.execute(
            "DELETE FROM seaql_migrations WHERE version = 'm20261215_000016_unknown_logins_hashed'",
        )
        .await;
        assert_succeeded(&run_cli(&db.url, &["migrate"], ""));
        let row = db
            .query_one(
                "SELECT count(*), sum(CASE WHEN subject = 'user:someone' THEN 1 ELSE 0 END) \
                 FROM credential_failures",
            )
            .await;
        let left: (i64, i64) = (
            row.try_get_by_index(0).expect("a count"),
            row.try_get_by_index(1).expect("a sum"),
        );
        assert_eq!(left, (1, 1), "only the account's count is left");
    }
}

/// PostgreSQL: an instance waiting for another's migration says so, since the wait has no
/// bound, then migrates once the other is done; of two that waited, the second finds nothing
/// left to apply, and says that rather than what it found pending before its wait.
#[tokio::test]
async fn postgres_migrate_says_it_waits_for_another_instance() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let conn = sea_orm::Database::connect(db.url.as_str())
        .await
        .expect("connect");
    // The lock another instance's migration holds ("rollcall" in ASCII), until it commits.
    let other = conn.begin().await.expect("begin");
    other
        .execute_unprepared("SELECT pg_advisory_xact_lock(8245928655518264428)")
        .await
        .expect("lock");
    let children = [(), ()].map(|()| spawn_cli(&db.url, &["migrate"], ""));
    wait_for_lock_waits(&conn, 2, "two migrations never waited for the lock").await;
    other.commit().await.expect("commit");
    let mut said: Vec<String> = children
        .into_iter()
        .map(|child| {
            let out = output_or_kill(child, "rollcall migrate");
            assert_succeeded(&out);
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(stderr.contains("another instance is migrating"), "{stderr}");
            stderr
        })
        .collect();
    said.sort_by_key(|stderr| !stderr.contains("up to date"));
    assert!(said[0].contains("no migration to apply"), "{said:?}");
    let all = rollcall::db::Db::known_migrations();
    assert!(
        said[1].contains(&format!("{all} migrations applied")),
        "{said:?}"
    );
    let _ = conn.close().await;
}

/// A user who lost their authenticator and recovery codes gets back in once the operator
/// resets their two-factor login; the sessions they had end.
async fn reset_totp_lets_a_locked_out_user_in(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let out = create_user(&db.url, "alice", "owner");
    assert_succeeded(&out);
    let server = ServerProcess::start(&db.url, &[]);
    let alice = server.login_as("alice").await;
    let setup = server
        .gql(
            Some(&alice.access),
            support::ENABLE_TOTP,
            serde_json::json!({}),
        )
        .await;
    let secret = setup["data"]["enableTotp"]["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("enableTotp failed: {setup}"));
    let totp = totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(secret).expect("base32"))
        .build()
        .expect("totp");
    let now = u64::try_from(chrono::Utc::now().timestamp()).expect("time");
    let confirmed = server
        .gql(
            Some(&alice.access),
            support::CONFIRM_TOTP,
            serde_json::json!({"code": totp.generate(now).to_string()}),
        )
        .await;
    assert_eq!(confirmed["data"]["confirmTotp"], true, "{confirmed}");
    support::assert_code(&server.login("alice", PASSWORD).await, "TOTP_REQUIRED");

    let out = run_cli(&db.url, &["user", "reset-totp", "ALICE "], "");
    assert_succeeded(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("two-factor login (or a setup not yet confirmed) is removed for alice;")
    );
    assert_eq!(server.login_as("alice").await.role, "OWNER");
    support::assert_code(&server.me(&alice.access).await, "UNAUTHENTICATED");
    assert!(
        !run_cli(&db.url, &["user", "reset-totp", "nobody"], "")
            .status
            .success()
    );
    assert!(server.terminate().success());
}

#[tokio::test]
async fn sqlite_reset_totp_lets_a_locked_out_user_in() {
    reset_totp_lets_a_locked_out_user_in(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_reset_totp_lets_a_locked_out_user_in() {
    reset_totp_lets_a_locked_out_user_in(Backend::Postgres).await;
}

/// A command or a server adds its schema only to an empty database: one holding another
/// application's tables (a mistyped `DATABASE_URL`, say) is refused and left as it was, until
/// `migrate` is asked for.
async fn commands_leave_another_applications_database_alone(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let conn = sea_orm::Database::connect(db.url.as_str())
        .await
        .expect("connect");
    let tables = "SELECT count(*) FROM information_schema.tables \
                  WHERE table_schema = current_schema()";
    let tables = match backend {
        Backend::Sqlite => "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
        Backend::Postgres => tables,
    };
    let count = || async {
        let row = sea_orm::ConnectionTrait::query_one_raw(
            &conn,
            sea_orm::Statement::from_string(conn.get_database_backend(), tables),
        )
        .await
        .expect("count")
        .expect("a row");
        row.try_get_by_index::<i64>(0).expect("a number")
    };
    sea_orm::ConnectionTrait::execute_unprepared(&conn, "CREATE TABLE invoices (id INTEGER)")
        .await
        .expect("another application's table");
    let out = create_user(&db.url, "alice", "owner");
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no rollcall schema") && stderr.contains("check DATABASE_URL"),
        "{stderr}"
    );
    assert_eq!(count().await, 1, "nothing added");
    // Nor does a server start on it.
    let out = run_cli(&db.url, &["--listen", "127.0.0.1:0", "serve"], "");
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`rollcall migrate` adds the schema"),
        "{stderr}"
    );
    assert_eq!(count().await, 1, "nothing added");
    assert_succeeded(&run_cli(&db.url, &["migrate"], ""));
    assert_succeeded(&create_user(&db.url, "alice", "owner"));
    let _ = conn.close().await;
}

/// pg_trgm installed in a schema of its own, off the search path, before rollcall's first start
/// (an `extensions` schema, as hosted PostgreSQL services keep it): the migrations still build
/// the search index, naming its operator class in that schema.
#[tokio::test]
async fn postgres_a_trigram_extension_off_the_search_path_still_indexes() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    db.execute("CREATE SCHEMA extensions; CREATE EXTENSION pg_trgm SCHEMA extensions")
        .await;
    assert_succeeded(&run_cli(&db.url, &["migrate"], ""));
    let row = db
        .query_one("SELECT count(*) FROM pg_indexes WHERE indexname = 'idx_users_search_text'")
        .await;
    assert_eq!(row.try_get_by_index::<i64>(0).expect("a count"), 1);
}

/// A PostgreSQL database without the search index (its migrating role could not create
/// pg_trgm) is served, with a warning at every start that searches scan the table.
#[tokio::test]
async fn postgres_a_missing_search_index_is_warned_about() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    assert_succeeded(&run_cli(&db.url, &["migrate"], ""));
    let starts = || {
        let (lines, listening) = start_up_lines(&db.url, &[], "127.0.0.1:0");
        assert!(listening, "{lines:?}");
        lines
            .iter()
            .any(|line| line.contains("the search index is missing"))
    };
    assert!(!starts(), "warned with the index there");
    db.execute("DROP INDEX idx_users_search_text").await;
    assert!(starts(), "no warning without the index");
}

/// A SQLite file holding only another application's view is another application's too, as a
/// PostgreSQL database holding one is.
#[tokio::test]
async fn sqlite_a_view_is_another_applications() {
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    db.execute("CREATE VIEW totals AS SELECT 1 AS n").await;
    let out = create_user(&db.url, "alice", "owner");
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no rollcall schema"), "{stderr}");
}

/// An extension's tables and views (`pg_buffercache` here; PostGIS's `spatial_ref_sys`) are no
/// other application's: a server starts on a database holding only them.
#[tokio::test]
async fn postgres_an_extension_is_no_other_application() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    db.execute("CREATE EXTENSION pg_buffercache").await;
    let server = ServerProcess::start(&db.url, &[]);
    assert_eq!(server.register("first").await.role, "OWNER");
    assert!(server.terminate().success());
}

#[tokio::test]
async fn sqlite_commands_leave_another_applications_database_alone() {
    commands_leave_another_applications_database_alone(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_commands_leave_another_applications_database_alone() {
    commands_leave_another_applications_database_alone(Backend::Postgres).await;
}

/// `user promote-owner` on a database without an owner, racing another that makes one (held
/// open by the test, so this one cannot see it yet): it transfers from the new owner, as if it
/// had run second, instead of failing on the one-owner index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_promote_owner_racing_another_owner_transfers_from_them() {
    let Some(app) = support::TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    for name in ["ann", "bob"] {
        assert_succeeded(&create_user(&app.db.url, name, "ADMIN"));
    }
    let made_elsewhere = ["UPDATE users SET role = 'OWNER' WHERE username = 'ann'".to_owned()];
    let url = app.db.url.clone();
    let promote =
        tokio::task::spawn_blocking(move || run_cli(&url, &["user", "promote-owner", "bob"], ""));
    let out = app
        .while_held(&made_elsewhere, 1, promote)
        .await
        .expect("the command ran");
    assert_succeeded(&out);
    let role =
        |name: &str| format!("SELECT count(*) FROM users WHERE username = '{name}' AND role = ");
    assert_eq!(app.count(&(role("bob") + "'OWNER'")).await, 1);
    assert_eq!(app.count(&(role("ann") + "'ADMIN'")).await, 1);
}

/// An import's users are stamped in its transaction, as `createUser`'s are: one kept waiting
/// for the table (held by the test) is stamped after the wait, so a listing read meanwhile
/// cannot have passed their place already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_import_is_stamped_once_it_may_write() {
    use sea_orm::{ConnectionTrait, TransactionTrait};

    let Some(app) = support::TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let hash = password_hash();
    let rows = serde_json::json!([{"username": "imported", "email": "imported@example.com", "passwordHash": hash}]);
    let db = app.database().await;
    let hold = db.begin().await.expect("begin");
    hold.execute_unprepared("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("locked");
    let url = app.db.url.clone();
    let import = tokio::task::spawn_blocking(move || {
        run_cli(&url, &["user", "import", "-"], &rows.to_string())
    });
    app.until_waiting_for_locks(1).await;
    let released = chrono::Utc::now();
    hold.commit().await.expect("commit");
    assert_succeeded(&import.await.expect("the command ran"));
    let stamped = app
        .db
        .query_one("SELECT created_at FROM users WHERE username = 'imported'")
        .await
        .try_get_by_index::<chrono::DateTime<chrono::Utc>>(0)
        .expect("a time");
    assert!(stamped >= released, "{stamped} before {released}");
    let _ = db.close().await;
}

/// `user reset-totp` audits the role its user has once it holds the row: one changed meanwhile
/// (held open by the test) is the one recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reset_totp_records_the_role_changed_meanwhile() {
    let Some(app) = support::TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let owner = app.register("owner").await;
    app.create_user(&owner, "bob", "STANDARD").await;
    let bob = app.login_as("bob").await;
    support::assert_ok(
        &app.gql(
            Some(&bob.access),
            support::ENABLE_TOTP,
            serde_json::json!({}),
        )
        .await,
    );
    let promotion = [format!(
        "UPDATE users SET role = 'ADMIN' WHERE id = '{}'",
        bob.id
    )];
    let url = app.db.url.clone();
    let reset =
        tokio::task::spawn_blocking(move || run_cli(&url, &["user", "reset-totp", "bob"], ""));
    let out = app
        .while_held(&promotion, 1, reset)
        .await
        .expect("the command ran");
    assert_succeeded(&out);
    let audited = app
        .count(&format!(
            "SELECT count(*) FROM audit_log WHERE action = 'TOTP_DISABLED' \
             AND target_id = '{}' AND target_role = 'ADMIN'",
            bob.id
        ))
        .await;
    assert_eq!(audited, 1);
}

/// A command cleans up nothing: with the CLI's own settings (here a 30-day idle limit, where
/// the server keeps sessions for 60, and their refresh tokens for 90), it would delete
/// sessions the server still honours.
async fn commands_leave_the_clean_up_to_servers(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    assert_succeeded(&create_user(&db.url, "alice", "owner"));
    let server = ServerProcess::start(
        &db.url,
        &[
            ("ROLLCALL_SESSION_IDLE", "60d"),
            ("ROLLCALL_REFRESH_TTL", "90d"),
        ],
    );
    let alice = server.login_as("alice").await;
    let forty_days_ago = chrono::Utc::now() - chrono::Duration::days(40);
    let at = match backend {
        Backend::Sqlite => format!("'{}'", forty_days_ago.to_rfc3339()),
        Backend::Postgres => format!("TIMESTAMPTZ '{}'", forty_days_ago.to_rfc3339()),
    };
    let conn = sea_orm::Database::connect(db.url.as_str())
        .await
        .expect("connect");
    sea_orm::ConnectionTrait::execute_unprepared(
        &conn,
        &format!("UPDATE sessions SET last_used_at = {at}"),
    )
    .await
    .expect("age the session");
    let _ = conn.close().await;
    // Hashing bob's password keeps the command running long enough for a clean-up to act.
    assert_succeeded(&create_user(&db.url, "bob", "standard"));
    support::assert_ok(&server.refresh(&alice.refresh).await);
    assert!(server.terminate().success());
}

#[tokio::test]
async fn sqlite_commands_leave_the_clean_up_to_servers() {
    commands_leave_the_clean_up_to_servers(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_commands_leave_the_clean_up_to_servers() {
    commands_leave_the_clean_up_to_servers(Backend::Postgres).await;
}

/// A client that stalls halfway through a request's head holds its connection open; the
/// shutdown waits for it only as long as a request may run, and a little more.
#[tokio::test]
async fn a_stalled_client_does_not_hold_the_shutdown() {
    use tokio::io::AsyncWriteExt;
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let server = ServerProcess::start(&db.url, &[("ROLLCALL_REQUEST_TIMEOUT", "1s")]);
    let addr = server.base_url.trim_start_matches("http://").to_owned();
    let mut stalled = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stalled
        .write_all(b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("half a request head");
    // Connections are taken in order: once a later one is answered, the stalled one is held.
    let later = server
        .gql(None, "{ serverInfo { version } }", serde_json::json!({}))
        .await;
    support::assert_ok(&later);
    // And a moment for its task to read the half head it was sent.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let asked = std::time::Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    // The shutdown did wait for the stalled request (so the test saw one), but no longer than
    // 1 s of request timeout and 5 s of slack, with room for a slow machine.
    let waited = asked.elapsed();
    assert!(waited >= std::time::Duration::from_secs(1), "{waited:?}");
    assert!(waited < std::time::Duration::from_secs(20), "{waited:?}");
    drop(stalled);
}

/// A client that sends a request's head too slowly loses its connection at the header
/// timeout, while others are served.
#[tokio::test]
async fn a_slow_request_head_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let server = ServerProcess::start(&db.url, &[("ROLLCALL_HEADER_TIMEOUT", "1s")]);
    let addr = server.base_url.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("half a request head");
    let started = std::time::Instant::now();
    support::assert_ok(
        &server
            .gql(None, "{ serverInfo { version } }", serde_json::json!({}))
            .await,
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        slow.read_to_end(&mut rest),
    )
    .await;
    assert!(
        closed.is_ok(),
        "the slow connection was still open after 10 s"
    );
    let waited = started.elapsed();
    assert!(waited < std::time::Duration::from_secs(5), "{waited:?}");
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn short_jwt_secret_stops_start_up() {
    let db = TestDb::create(Backend::Sqlite).await.expect("sqlite");
    // Spaces around a secret add nothing to guess.
    for short in ["too-short", &format!("{:40}x", "")] {
        let out = run_or_kill(
            rollcall_command(&db.url, &[("ROLLCALL_JWT_SECRET", short)]).arg("serve"),
            "rollcall serve with a short key",
        );
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("ROLLCALL_JWT_SECRET") && stderr.contains("32 bytes"),
            "{stderr}"
        );
    }
}

/// A blank `ROLLCALL_JWT_SECRET` (as a template leaves it) counts as unset: tokens are signed
/// with the default Ed25519 keys, never with a secret of spaces anyone could guess.
#[tokio::test]
async fn a_blank_jwt_secret_is_no_secret() {
    for blank in ["", &" ".repeat(40)] {
        let db = TestDb::create(Backend::Sqlite).await.expect("sqlite");
        let server = ServerProcess::start(&db.url, &[("ROLLCALL_JWT_SECRET", blank)]);
        let alice = server.register("alice").await;
        assert_eq!(
            support::jwt_part(&alice.access, 0)["alg"],
            "EdDSA",
            "{blank:?}"
        );
        assert!(server.terminate().success());
    }
}

/// Instances on one database that sign with different secrets, or one with a secret beside
/// others without, refuse each other's access tokens: each start-up line names what signs (a
/// secret by the start of its SHA-256, which whitespace around it does not change, or the
/// stored key's kid), and a refusal says why at DEBUG.
#[tokio::test]
async fn the_listening_line_names_what_signs_tokens() {
    let db = TestDb::create(Backend::Sqlite).await.expect("sqlite");
    let signer = |env: &[(&str, &str)]| {
        let (lines, listening) = start_up_lines(&db.url, env, "127.0.0.1:0");
        assert!(listening, "{lines:?}");
        let line = lines.last().expect("the listening line");
        let signer = line.split("signing with ").nth(1);
        signer.unwrap_or_else(|| panic!("{line}")).to_owned()
    };
    let secret = "a".repeat(40);
    let of_secret = signer(&[("ROLLCALL_JWT_SECRET", &secret)]);
    let labelled = format!("rollcall fingerprint:{secret}");
    let fingerprint = &rollcall::auth::sha256_hex(labelled)[..8];
    assert_eq!(
        of_secret,
        format!("ROLLCALL_JWT_SECRET, SHA-256 {fingerprint}…)")
    );
    let read_from_a_file = format!("{secret}\n");
    assert_eq!(
        signer(&[("ROLLCALL_JWT_SECRET", &read_from_a_file)]),
        of_secret
    );
    assert_ne!(
        signer(&[("ROLLCALL_JWT_SECRET", &"b".repeat(40))]),
        of_secret
    );
    let stored = ServerProcess::start(&db.url, &[]);
    let alice = stored.register("alice").await;
    let kid = support::jwt_part(&alice.access, 0)["kid"].clone();
    let kid = kid.as_str().expect("a kid");
    assert_eq!(signer(&[]), format!("the stored key {kid})"));
    let with_secret = ServerProcess::start(
        &db.url,
        &[
            ("ROLLCALL_JWT_SECRET", &secret),
            ("RUST_LOG", "info,rollcall=debug"),
        ],
    );
    let me = with_secret.gql(Some(&alice.access), "{ me { id } }", serde_json::json!({}));
    support::assert_code(&me.await, "UNAUTHENTICATED");
    let refused = with_secret.log_line("access token refused");
    assert!(refused.contains("InvalidAlgorithm"), "{refused}");
    // Signed with another secret.
    let other = ServerProcess::start(&db.url, &[("ROLLCALL_JWT_SECRET", &"b".repeat(40))]);
    let alice = other.login_as("alice").await;
    let me = with_secret.gql(Some(&alice.access), "{ me { id } }", serde_json::json!({}));
    support::assert_code(&me.await, "UNAUTHENTICATED");
    let refused = with_secret.log_lines_until("InvalidSignature");
    assert!(!refused.concat().contains(&secret), "{refused:?}");
    for server in [with_secret, stored, other] {
        assert!(server.terminate().success());
    }
}

/// A second signal while requests finish stops the server at once, with the status a shell
/// gives a process that signal ends, rather than after the request timeout.
#[tokio::test]
async fn a_second_signal_stops_the_server_at_once() {
    use tokio::io::AsyncWriteExt;
    let db = TestDb::create(Backend::Sqlite).await.expect("sqlite");
    let mut server = ServerProcess::start(&db.url, &[("ROLLCALL_REQUEST_TIMEOUT", "60s")]);
    // A request whose body never comes holds a graceful shutdown for the request timeout.
    let address = server.base_url.trim_start_matches("http://").to_owned();
    let mut stalled = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    stalled
        .write_all(
            b"POST /graphql HTTP/1.1\r\nHost: rollcall\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"query\":",
        )
        .await
        .expect("sent");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    server.send("TERM");
    server.log_lines_until("shutting down");
    // The same stop delivered twice at once, and a hang-up, are no second signal.
    server.send("TERM");
    server.send("HUP");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(server.is_running(), "stopped by a doubled signal");
    let started = std::time::Instant::now();
    let status = server.signal("INT");
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    drop(stalled);
}

/// A server that cannot listen stops before it opens the database: on a shared PostgreSQL it
/// would otherwise migrate the schema under the servers already running, then leave.
#[tokio::test]
async fn a_server_that_cannot_listen_leaves_the_database_alone() {
    let db = TestDb::create(Backend::Sqlite).await.expect("sqlite");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = taken.local_addr().expect("address").to_string();
    let out = run_or_kill(
        rollcall_command(&db.url, &[("ROLLCALL_LISTEN", &address)]).arg("serve"),
        "rollcall serve",
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {address}")),
        "{stderr}"
    );
    assert!(!db.sqlite_file().exists(), "{stderr}");
}

/// An environment variable that looks like a setting but is none (a misspelling, or the
/// database URL under the prefix the others have) is named in a warning, not silently ignored.
#[tokio::test]
async fn unknown_settings_are_warned_about() {
    let db = TestDb::create(Backend::Sqlite).await.expect("sqlite");
    let out = run_or_kill(
        rollcall_command(
            &db.url,
            &[
                ("ROLLCALL_DATABASE_URL", "postgres://elsewhere/rollcall"),
                ("ROLLCALL_ACESS_TTL", "5m"),
                // The project's own tools' variables are no mistake.
                ("ROLLCALL_FUZZ_SECONDS", "5"),
            ],
        )
        .arg("migrate"),
        "rollcall migrate",
    );
    assert_succeeded(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warned = |name: &str| {
        stderr
            .lines()
            .any(|line| line.contains("WARN") && line.contains(name))
    };
    assert!(warned("ROLLCALL_DATABASE_URL"), "{stderr}");
    assert!(stderr.contains("DATABASE_URL)"), "{stderr}");
    assert!(warned("ROLLCALL_ACESS_TTL"), "{stderr}");
    assert!(!warned("ROLLCALL_FUZZ_SECONDS"), "{stderr}");
    assert!(
        !stderr.contains("elsewhere"),
        "a value is not printed: {stderr}"
    );
}

/// A refused setting names the environment variable it came from, and counts below 1 say so
/// plainly.
#[test]
fn a_refused_setting_names_its_variable() {
    for (variable, value, said) in [
        ("ROLLCALL_ACCESS_TTL", "abc", "`abc`"),
        ("ROLLCALL_MAX_DEPTH", "0", "must be at least 1"),
        ("ROLLCALL_THROTTLE_AFTER", "0", "must be at least 1"),
        ("ROLLCALL_DB_MAX_CONNECTIONS", "5000000000", "is too large"),
        (
            "ROLLCALL_DB_MAX_CONNECTIONS",
            "10001",
            "must be at most 10000",
        ),
        (
            "ROLLCALL_LISTEN",
            "localhost:8080",
            "no IP address and port",
        ),
        ("ROLLCALL_THROTTLE_WAIT", "500ms", "shorter than a second"),
        ("ROLLCALL_THROTTLE_MAX", "1ms", "shorter than a second"),
        ("ROLLCALL_SESSION_IDLE", "500ms", "shorter than two seconds"),
        ("ROLLCALL_REFRESH_TTL", "1s", "shorter than two seconds"),
        (
            "ROLLCALL_SESSION_MAX_AGE",
            "1999ms",
            "shorter than two seconds",
        ),
    ] {
        let out = run_or_kill(
            rollcall_command("sqlite://unused.db", &[(variable, value)]).arg("migrate"),
            "rollcall migrate with a bad setting",
        );
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(said), "{stderr}");
        assert!(
            stderr.contains(&format!("comes from {variable}")),
            "{stderr}"
        );
    }
    // Given as an option, it is the option's.
    let out = run_or_kill(
        rollcall_command("sqlite://unused.db", &[("ROLLCALL_ACCESS_TTL", "1m")]).args([
            "--access-ttl",
            "abc",
            "migrate",
        ]),
        "rollcall migrate with a bad option",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("comes from"));
    // A bad variable under a good option is still read, and refused: said so, since the
    // message names the option, whose value was typed right.
    let out = run_or_kill(
        rollcall_command("sqlite://unused.db", &[("ROLLCALL_ACCESS_TTL", "abc")]).args([
            "--access-ttl",
            "5m",
            "migrate",
        ]),
        "rollcall migrate with a bad variable under a good option",
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("comes from ROLLCALL_ACCESS_TTL, read even where the option is given"),
        "{stderr}"
    );
}

/// A SQLite URL without `mode=` opens only a file that is there: for one that is not, the
/// message says how to have it made; a file that is there but no database is not told that.
#[test]
fn a_sqlite_file_that_will_not_open_gets_the_hint_that_fits() {
    let dir = std::env::temp_dir().join(format!("rollcall-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let not_a_database = dir.join("notes.txt");
    std::fs::write(&not_a_database, "x".repeat(4096)).expect("a file");
    let said = |path: &std::path::Path| {
        let url = format!("sqlite://{}", path.display());
        let out = run_or_kill(
            rollcall_command(&url, &[]).arg("migrate"),
            "rollcall migrate of a file that will not open",
        );
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = said(&dir.join("missing.db"));
    assert!(
        missing.contains("needs `?mode=rwc` to be created"),
        "{missing}"
    );
    let other = said(&not_a_database);
    assert!(other.contains("not a database"), "{other}");
    assert!(!other.contains("mode=rwc"), "{other}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The SQLite file holds password hashes, two-factor secrets and the signing keys: one the
/// server makes is its owner's alone, its write-ahead files too; and a deleted account's row is
/// overwritten, not left in the file for anyone who reads it later.
#[cfg(unix)]
#[tokio::test]
async fn a_sqlite_file_is_private_and_keeps_no_deleted_account() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::create(Backend::Sqlite).await.expect("sqlite");
    let server = ServerProcess::start(&db.url, &[]);
    let owner = server.register("owner").await;
    // Greek, so that neither it nor its trigrams (which the search index keeps, folded) can
    // turn up by chance in the file's hex ids or base64 hashes.
    let marker = "ζωβλυξ";
    let mut leaving = support::new_user("leaving", "STANDARD");
    leaving["firstName"] = serde_json::json!(marker);
    let created = server.create_user_raw(&owner, leaving).await;
    let id = created["data"]["createUser"]["id"].as_str().expect("an id");
    let file = db.sqlite_file();
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", file.display());
        let mode = std::fs::metadata(&path).expect(&path).permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{path}: {mode:o}");
    }
    support::assert_ok(&server.delete_user(&owner, id).await);
    assert!(server.terminate().success());
    let bytes = std::fs::read(&file).expect("the file");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains(marker),
        "the deleted name is still in the file"
    );
    assert!(
        !text.contains("leaving@example.com"),
        "the deleted email is still in the file"
    );
    // Nor in the search index, which keeps names as trigrams of their folded text.
    for trigram in ["ζωβ", "ωβλ", "βλυ", "λυξ"] {
        assert!(!text.contains(trigram), "the index still has `{trigram}`");
    }
}

/// A link made ahead to a file not made yet (a data directory on a volume, say): the file is
/// made where it points, private as any other.
#[cfg(unix)]
#[test]
fn a_sqlite_file_made_through_a_link_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("rollcall-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("volume")).expect("dirs");
    std::os::unix::fs::symlink("volume/rollcall.db", dir.join("rollcall.db")).expect("a link");
    let url = format!("sqlite://{}?mode=rwc", dir.join("rollcall.db").display());
    assert_succeeded(&run_cli(&url, &["migrate"], ""));
    let made = std::fs::metadata(dir.join("volume/rollcall.db")).expect("made where it points");
    assert_eq!(made.permissions().mode() & 0o777, 0o600);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A database URL that does not parse, or names no driver, fails start-up without its password
/// in the error.
#[test]
fn a_bad_database_url_is_reported_without_its_password() {
    for url in [
        "postgres://app:pa/ss#w?rd@127.0.0.1:5432/rollcall",
        "mysqlx://app:hunter2secret@127.0.0.1/rollcall",
        // libpq's form, and a URL one slash short (read as a local database named after it).
        "host=127.0.0.1 user=app password=hunter2secret dbname=rollcall",
        "postgres:/app:hunter2secret@127.0.0.1/rollcall",
    ] {
        let out = run_or_kill(
            rollcall_command(url, &[]).arg("migrate"),
            "rollcall migrate with a bad URL",
        );
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("pa/ss") && !stderr.contains("hunter2"),
            "{stderr}"
        );
        assert!(stderr.contains("error"), "{stderr}");
        assert!(stderr.matches("Connection Error").count() <= 1, "{stderr}");
        if url.contains("pa/ss") {
            assert!(stderr.contains("percent-encode"), "{stderr}");
        }
    }
    // An empty one, and an in-memory SQLite database (one per pooled connection, the schema in
    // one of them), are refused with their reason, and as JSON when the logs are.
    for (url, reason) in [
        ("", "DATABASE_URL is empty"),
        ("sqlite::memory:", "in-memory"),
        ("sqlite://x.db?mode=memory", "in-memory"),
    ] {
        let out = run_or_kill(
            rollcall_command(url, &[("ROLLCALL_LOG_FORMAT", "json")]).arg("migrate"),
            "rollcall migrate with a bad URL",
        );
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line: serde_json::Value = serde_json::from_str(stderr.trim()).expect("one JSON line");
        assert_eq!(line["level"], "ERROR", "{stderr}");
        assert!(
            line["error"].as_str().is_some_and(|e| e.contains(reason)),
            "{stderr}"
        );
        // In the same form as every other line's.
        assert!(
            line["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.len() == "2026-01-01T00:00:00.000000Z".len()),
            "{stderr}"
        );
    }
}

/// What a command tells the operator on stderr is JSON when the logs are, line for line, and
/// a reader that closes stdout early (`| head`) does not turn a command that did its work
/// into a failure.
#[tokio::test]
async fn commands_write_json_lines_and_outlive_a_closed_stdout() {
    let db = TestDb::create(Backend::Sqlite).await.expect("sqlite");
    let json = [("ROLLCALL_LOG_FORMAT", "json")];
    let mut create = rollcall_command(&db.url, &json);
    create.args([
        "user",
        "create",
        "--username",
        "alice",
        "--email",
        "alice@example.com",
    ]);
    for command in [
        rollcall_command(&db.url, &json).arg("migrate"),
        rollcall_command(&db.url, &json).args(["keys", "rotate", "--revoke"]),
        &mut create,
    ] {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rollcall");
        // Closed before the command writes anything to it.
        drop(child.stdout.take());
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(format!("{PASSWORD}\n").as_bytes());
        }
        let out = output_or_kill(child, "rollcall with JSON logs");
        assert_succeeded(&out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.trim().is_empty());
        for line in stderr.lines() {
            let line: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
            assert!(line["level"].is_string(), "{line}");
        }
    }
    let users = db.query_one("SELECT count(*) FROM users").await;
    assert_eq!(users.try_get_by_index::<i64>(0).expect("count"), 1);
    // A setting refused before the settings are read is a JSON line too, when JSON was asked
    // (in any case, as the setting is read).
    for asked in ["json", "JSON"] {
        let out = run_or_kill(
            rollcall_command(
                &db.url,
                &[
                    ("ROLLCALL_LOG_FORMAT", asked),
                    ("ROLLCALL_MAX_ALIASES", "x"),
                ],
            )
            .arg("migrate"),
            "rollcall with a bad setting",
        );
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line: serde_json::Value = serde_json::from_str(stderr.trim()).expect("one JSON line");
        assert!(
            line["error"]
                .as_str()
                .is_some_and(|e| e.contains("ROLLCALL_MAX_ALIASES")),
            "{stderr}"
        );
    }
    // Nor does a closed stderr fail a command that did its work.
    let mut child = rollcall_command(&db.url, &[])
        .args(["keys", "rotate"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rollcall");
    drop(child.stderr.take());
    assert_succeeded(&output_or_kill(child, "rollcall keys rotate"));
    // A result that could not be written (a full disk) is a failure, said as such.
    if let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") {
        let child = rollcall_command(&db.url, &[])
            .arg("schema")
            .stdout(full)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rollcall");
        let out = output_or_kill(child, "rollcall schema to a full disk");
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("did its work, but its result could not be written"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A command kept waiting past ROLLCALL_DB_TIMEOUT by another process's write lock on SQLite
/// says so, and which setting bounds the wait, rather than only SQLite's "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_command_kept_waiting_by_a_write_lock_says_what_to_do() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let db = TestDb::create(Backend::Sqlite).await.expect("sqlite");
    assert_succeeded(&create_user(&db.url, "alice", "owner"));
    let conn = db.connect().await;
    let hold = conn.begin().await.expect("begin");
    hold.execute_unprepared("UPDATE users SET updated_at = updated_at")
        .await
        .expect("take the write lock");
    let out = tokio::task::spawn_blocking({
        let url = db.url.clone();
        move || {
            run_or_kill(
                rollcall_command(&url, &[("ROLLCALL_DB_TIMEOUT", "1s")]).args([
                    "user",
                    "reset-totp",
                    "alice",
                ]),
                "rollcall user reset-totp",
            )
        }
    })
    .await
    .expect("joined");
    hold.rollback().await.expect("release the lock");
    let _ = conn.close().await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("did not answer within ROLLCALL_DB_TIMEOUT"),
        "{stderr}"
    );
}

#[tokio::test]
async fn generated_key_survives_restarts() {
    let db = TestDb::create(Backend::Sqlite).await.expect("sqlite");
    let first = ServerProcess::start(&db.url, &[]);
    let alice = first.register("alice").await;
    assert!(first.terminate().success());
    let second = ServerProcess::start(&db.url, &[]);
    let me = second.me(&alice.access).await;
    assert_eq!(me["data"]["me"]["username"], "alice", "{me}");
}

#[test]
fn schema_command_prints_the_sdl() {
    let out = run_or_kill(
        std::process::Command::new(env!("CARGO_BIN_EXE_rollcall")).arg("schema"),
        "rollcall schema",
    );
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        rollcall::graphql::sdl()
    );
}

/// The server's allocator settings reach jemalloc, and jemalloc is the C `malloc` too (SQLite's):
/// only unprefixed jemalloc reads `MALLOC_CONF`, and it names where each setting came from.
#[cfg(target_os = "linux")]
#[test]
fn the_allocator_settings_take_effect() {
    let out = run_or_kill(
        std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .arg("schema")
            .env("MALLOC_CONF", "confirm_conf:true"),
        "rollcall schema",
    );
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("global variable malloc_conf): \"oversize_threshold:0,"),
        "{log}"
    );
    for setting in [
        "background_thread:true",
        "dirty_decay_ms:1000",
        "muzzy_decay_ms:0",
    ] {
        assert!(log.contains(&format!("Set conf value: {setting}")), "{log}");
    }
}

#[test]
fn help_never_prints_secret_values() {
    let secret_url = "postgres://app:hunter2-in-the-url@127.0.0.1:1/rollcall";
    let output = run_or_kill(
        rollcall_command(
            secret_url,
            &[(
                "ROLLCALL_JWT_SECRET",
                "a-signing-key-nobody-may-see-0123456789",
            )],
        )
        .arg("--help"),
        "rollcall --help",
    );
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("DATABASE_URL"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("nobody-may-see"), "{text}");
}

/// Listening beyond loopback where the first registration would make its registrant the owner
/// gets a warning; with registration closed, or once an account exists, there is no such risk
/// and no warning. An account made on the command line means later registrations are
/// standard users.
#[tokio::test]
async fn an_exposed_server_without_owner_warns_and_registrations_stay_standard() {
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    // Whether a server starting on `address` says `what` before it listens.
    let tells = |address: &str, env: &[(&str, &str)], what: &str| {
        let (lines, _) = start_up_lines(&db.url, env, address);
        lines.iter().any(|line| line.contains(what))
    };
    // Started on 0.0.0.0 only to read its log; no request goes anywhere but 127.0.0.1.
    let warns =
        |env: &[(&str, &str)]| tells("0.0.0.0:0", env, "first registration becomes the owner");
    let no_owner = "`rollcall user promote-owner USERNAME`";
    assert!(warns(&[]), "no warning about the missing owner");
    assert!(!warns(&[("ROLLCALL_REGISTRATION", "closed")]));
    assert!(!tells("127.0.0.1:0", &[], no_owner), "no account at all");
    // Trusting every address lets any client name its own.
    let trust = |proxies: &str| {
        let env = [("ROLLCALL_TRUSTED_PROXIES", proxies)];
        tells("127.0.0.1:0", &env, "trusts every IPv")
    };
    assert!(trust("10.0.0.5, 0.0.0.0/0"));
    assert!(trust("::/0"));
    assert!(!trust("10.0.0.0/8"));

    // Upper case as GraphQL writes it, too. Accounts without an owner are told how to get one.
    let output = create_user(&db.url, "operator", "ADMIN");
    assert!(output.status.success(), "{output:?}");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains(no_owner), "{said}");
    assert!(!warns(&[]), "an account exists: registrations are standard");
    assert!(
        tells("127.0.0.1:0", &[], no_owner),
        "nobody can change roles"
    );
    let server = ServerProcess::start(&db.url, &[]);
    let first = server.register("first").await;
    assert_eq!(first.role, "STANDARD");
    assert!(server.terminate().success());

    let promoted = run_cli(&db.url, &["user", "promote-owner", "operator"], "");
    assert!(promoted.status.success(), "{promoted:?}");
    // Nobody was the owner: nobody else's sessions ended.
    assert_eq!(
        String::from_utf8_lossy(&promoted.stdout),
        "operator is now the owner; their sessions ended\n"
    );
    let output = create_user(&db.url, "member", "standard");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !said.contains(no_owner),
        "{said}"
    );
    assert!(!tells("127.0.0.1:0", &[], no_owner), "an owner exists");
}

/// A PostgreSQL database whose locale folds only ASCII letters (`C`) cannot search names
/// for others without regard to case: a server on it says so when it starts, and one on a
/// UTF-8 locale does not.
#[tokio::test]
async fn postgres_a_database_in_the_c_locale_is_warned_about() {
    let warns = |db: &TestDb| {
        let (lines, listening) = start_up_lines(&db.url, &[], "127.0.0.1:0");
        assert!(listening, "{lines:?}");
        lines.iter().any(|line| line.contains("searching names"))
    };
    let options = "TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'";
    let Some(c) = TestDb::create_with(Backend::Postgres, options).await else {
        return;
    };
    assert!(warns(&c), "no warning about the C locale");
    let options = "TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'";
    let Some(utf8) = TestDb::create_with(Backend::Postgres, options).await else {
        return;
    };
    assert!(!warns(&utf8), "a UTF-8 locale folds every letter");
    // An ICU locale does too, whatever LC_CTYPE says, where PostgreSQL was built with ICU.
    let icu = "SELECT count(*) FROM pg_collation WHERE collprovider = 'i'";
    if utf8
        .query_one(icu)
        .await
        .try_get_by_index::<i64>(0)
        .unwrap_or(0)
        > 0
    {
        let options = "TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'und' \
                       LC_COLLATE 'C' LC_CTYPE 'C'";
        let Some(icu) = TestDb::create_with(Backend::Postgres, options).await else {
            return;
        };
        assert!(!warns(&icu), "an ICU locale folds every letter");
    }
}

/// A database that cannot be reached is named (its password masked) with the time allowed and
/// why (not only that the pool timed out), said once, in plain text when the output is no
/// terminal.
#[test]
fn an_unreachable_database_is_named_without_its_password() {
    let out = run_or_kill(
        rollcall_command(
            "postgres://rollcall:hunter2hunter2@127.0.0.1:1/rollcall",
            &[("ROLLCALL_DB_TIMEOUT", "1s")],
        )
        .arg("migrate"),
        "rollcall migrate",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("postgres://rollcall:***@127.0.0.1:1/rollcall")
            && stderr.contains("ROLLCALL_DB_TIMEOUT"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert_eq!(stderr.matches("Connection refused").count(), 1, "{stderr}");
    assert!(!stderr.contains("pool timed out"), "{stderr}");
    // The log of a migration that works, written to a pipe: no colour codes.
    let dir = std::env::temp_dir().join(format!("rollcall-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let url = format!("sqlite://{}?mode=rwc", dir.join("logs.db").display());
    let out = run_or_kill(
        rollcall_command(&url, &[]).arg("migrate"),
        "rollcall migrate",
    );
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has been applied"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "no colour codes: {stderr}");
}

/// A database that refuses at once (here one that does not exist) is reported at once, and
/// the message claims no wait that did not happen.
#[tokio::test]
async fn postgres_a_database_that_refuses_is_reported_without_a_wait() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let missing = format!("{}_missing", db.url);
    let started = std::time::Instant::now();
    let out = run_or_kill(
        rollcall_command(&missing, &[("ROLLCALL_DB_TIMEOUT", "30s")]).arg("migrate"),
        "rollcall migrate",
    );
    assert!(!out.status.success());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "it waited"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!stderr.contains("ROLLCALL_DB_TIMEOUT"), "{stderr}");
    // Not PostgreSQL's own source line, which reads as a line of the operator's input.
    assert!(!stderr.contains(" at line "), "{stderr}");
}

/// Once `rollcall migrate` has run as the database's owner, servers may connect as a role that
/// only reads and writes rows: a server with nothing to migrate does not run the migrator,
/// which needs the right to create tables. That holds for a server that started while the
/// migration ran, and waited for it, too.
#[tokio::test]
async fn postgres_a_migrated_database_serves_a_role_without_create() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let role = format!("rollcall_rows_{}", uuid::Uuid::new_v4().simple());
    let owner = db.connect().await;
    for statement in [
        format!("CREATE ROLE {role} LOGIN PASSWORD 'rows only'"),
        format!("REVOKE CREATE ON SCHEMA public FROM PUBLIC, {role}"),
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public \
             GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}"
        ),
        format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {role}"
        ),
    ] {
        owner
            .execute_unprepared(&statement)
            .await
            .expect(&statement);
    }
    let mut as_role = reqwest::Url::parse(&db.url).expect("a URL");
    as_role.set_username(&role).expect("a user");
    as_role.set_password(Some("rows only")).expect("a password");
    let as_role = as_role.to_string();
    let served = std::panic::AssertUnwindSafe(async {
        // Before the owner migrates, the role is told why it cannot, and what to do.
        let refused = run_or_kill(
            rollcall_command(&as_role, &[]).arg("migrate"),
            "rollcall migrate as a role without CREATE",
        );
        assert!(!refused.status.success());
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(said.contains("as the database's owner"), "{said}");
        assert!(
            !said.contains(" at line "),
            "PostgreSQL's source line: {said}"
        );
        // The owner's migration waits for a lock the test holds, and the server for it.
        let hold = owner.begin().await.expect("begin");
        hold.execute_unprepared(&format!(
            "SELECT pg_advisory_xact_lock({})",
            rollcall::db::MIGRATION_LOCK
        ))
        .await
        .expect("take the migration lock");
        let waits = |n: i64| {
            let db = &db;
            async move {
                support::eventually(&format!("{n} waits for the migration lock"), async || {
                    let sql = "SELECT count(*) FROM pg_locks \
                               WHERE locktype = 'advisory' AND NOT granted";
                    let row = db.query_one(sql).await;
                    row.try_get_by_index::<i64>(0).expect("a count") >= n
                })
                .await;
            }
        };
        let migrate = spawn_cli(&db.url, &["migrate"], "");
        waits(1).await;
        let starting = ServerProcess::spawn(&as_role, &[]);
        waits(2).await;
        hold.rollback().await.expect("release");
        let migrated = tokio::task::spawn_blocking(move || output_or_kill(migrate, "migrate"))
            .await
            .expect("join");
        assert_succeeded(&migrated);
        let server = tokio::task::spawn_blocking(move || starting.listening())
            .await
            .expect("join");
        let alice = server.register("alice").await;
        assert_eq!(alice.role, "OWNER");
        let connected = format!(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND usename = '{role}'"
        );
        let row = db.query_one(&connected).await;
        assert!(row.try_get_by_index::<i64>(0).expect("a count") >= 1);
        let status = server.terminate();
        assert!(status.success(), "{status:?}");
        // And a server started after the migration.
        let server = ServerProcess::start(&as_role, &[]);
        support::assert_ok(
            &server
                .gql(Some(&alice.access), "{ me { id } }", serde_json::json!({}))
                .await,
        );
        let status = server.terminate();
        assert!(status.success(), "{status:?}");
        // Without SELECT on the migrator's table, its reading fails; without any right on it the
        // migrations look all pending. Either way the role is told what it lacks, not that it
        // must migrate as the owner, nor that the database is another application's.
        for revoked in ["SELECT", "ALL"] {
            let revoke = format!("REVOKE {revoked} ON seaql_migrations FROM {role}");
            owner.execute_unprepared(&revoke).await.expect("revoked");
            let refused = run_or_kill(
                rollcall_command(&as_role, &[]).args(["--listen", "127.0.0.1:0", "serve"]),
                "rollcall serve without SELECT on seaql_migrations",
            );
            assert!(!refused.status.success());
            let said = String::from_utf8_lossy(&refused.stderr);
            assert!(
                said.contains("grant it SELECT on that table"),
                "{revoked}: {said}"
            );
        }
    });
    let outcome = futures::FutureExt::catch_unwind(served).await;
    // The role outlives the test's database unless it is dropped here.
    for statement in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        let _ = owner.execute_unprepared(&statement).await;
    }
    let _ = owner.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A server started under a low soft limit of open files raises it to the hard limit, so idle
/// connections cannot use up the files it has to accept others with.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn serve_raises_the_open_file_limit() {
    use std::os::unix::process::CommandExt;
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let mut command = rollcall_command(&db.url, &[("ROLLCALL_LISTEN", "127.0.0.1:0")]);
    command.arg("serve").stderr(Stdio::piped());
    // SAFETY: only setrlimit, async-signal-safe, runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Below the hard limit whatever it is, so the raise is seen.
            limit.rlim_cur = (limit.rlim_max / 2).min(256);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("spawn rollcall");
    let (_, listening) = lines_until_listening(&mut child);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id()));
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening, "the server never listened");
    let limits = limits.expect("the server's limits");
    let files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("the open-file limit");
    let numbers: Vec<&str> = files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers.len(), 2, "{files}");
    assert_eq!(
        numbers[0], numbers[1],
        "soft limit raised to the hard one: {files}"
    );
}

/// A command refused for its input opens no database: it leaves no SQLite file behind.
#[tokio::test]
async fn refused_input_leaves_no_database_behind() {
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let create = [
        "user",
        "create",
        "--username",
        "x1x",
        "--email",
        "x@example.com",
    ];
    for stdin in ["", "\n"] {
        let out = run_cli(&db.url, &create, stdin);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no password given"), "{stderr}");
    }
    let out = run_cli(&db.url, &["user", "import", "-"], "{");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a JSON array"), "{stderr}");
    let file = db.sqlite_file();
    assert!(!file.exists(), "{} was created", file.display());
    // The same commands with their input do open it, and close it whole.
    assert_succeeded(&run_cli(&db.url, &create, &format!("{PASSWORD}\n")));
    assert_eq!(users_in_a_copy_of(&file).await, Some(1));
}

/// How many users a copy of the SQLite file `file`, taken alone, holds: `None` when the copy
/// has no users table (what was written is still in the write-ahead log beside the file).
async fn users_in_a_copy_of(file: &std::path::Path) -> Option<i64> {
    let copy = file.with_file_name("copy.db");
    std::fs::copy(file, &copy).expect("copy the database file");
    let url = format!("sqlite://{}?mode=ro", copy.display());
    let copied = sea_orm::Database::connect(url.as_str())
        .await
        .expect("open the copy");
    let statement = sea_orm::Statement::from_string(
        copied.get_database_backend(),
        "SELECT COUNT(*) FROM users",
    );
    let users = sea_orm::ConnectionTrait::query_one_raw(&copied, statement).await;
    let _ = copied.close().await;
    let _ = std::fs::remove_file(&copy);
    users
        .ok()
        .flatten()
        .and_then(|row| row.try_get_by_index::<i64>(0).ok())
}

/// A stopped server on SQLite leaves a whole database file, its write-ahead log folded in:
/// a copy of the file alone (a backup of a stopped server) holds what was written.
#[tokio::test]
async fn a_stopped_sqlite_server_leaves_a_whole_file() {
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let server = ServerProcess::start(&db.url, &[]);
    server.register("alice").await;
    assert!(server.terminate().success());
    let users = users_in_a_copy_of(&db.sqlite_file()).await;
    assert_eq!(users, Some(1), "the copy lacks what was written");
}

/// A server whose log reader has gone (a log shipper behind a pipe that died) loses log lines,
/// not its service: requests are answered, and SIGTERM still stops it.
#[tokio::test]
async fn a_closed_log_pipe_costs_only_the_log() {
    use std::io::BufRead;
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let mut child = support::KillOnDrop(
        rollcall_command(&db.url, &[("ROLLCALL_LISTEN", "127.0.0.1:0")])
            .arg("serve")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rollcall"),
    );
    let mut log = std::io::BufReader::new(child.0.stderr.take().expect("stderr piped"));
    let mut addr = None;
    let mut line = String::new();
    while addr.is_none() && log.read_line(&mut line).is_ok_and(|n| n > 0) {
        addr = line
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .map(str::to_owned);
        line.clear();
    }
    // The pipe's only reader closes: every log line from here on fails to be written.
    drop(log);
    let addr = addr.expect("the server says where it listens");
    let client = support::http_client();
    for _ in 0..3 {
        let body: serde_json::Value = client
            .post(format!("http://{addr}/graphql"))
            .json(&serde_json::json!({"query": "{ serverInfo { version } }"}))
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("JSON");
        support::assert_ok(&body);
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let status = support::wait_or_kill(&mut child.0, "rollcall serve after SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// A SQLite file moved away twice: each outage is logged when it begins and when it ends,
/// not once per probe, and not only the first.
#[tokio::test]
async fn each_outage_of_a_sqlite_file_is_logged_once() {
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let server = ServerProcess::start(&db.url, &[]);
    let ready = async || server.status("/ready").await.as_u16();
    let file = db.sqlite_file();
    let aside = file.with_extension("aside");
    for outage in 1..=2 {
        std::fs::rename(&file, &aside).expect("move the file away");
        assert_eq!(ready().await, 503);
        assert_eq!(ready().await, 503);
        std::fs::rename(&aside, &file).expect("the file back");
        assert_eq!(ready().await, 200);
        let lines = server.log_lines_until_count("ready again", outage);
        let count = |text: &str| lines.iter().filter(|line| line.contains(text)).count();
        assert_eq!(count("removed or replaced"), outage, "{lines:#?}");
        assert_eq!(count("ready again"), outage, "{lines:#?}");
    }
}

/// A stopped server's SQLite file alone is a whole copy, though another program holds the
/// file open: closing the last connection would not fold the write-ahead log in then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_folds_the_log_though_another_program_has_the_file_open() {
    use sea_orm::ConnectionTrait;
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let server = ServerProcess::start(&db.url, &[]);
    let other = db.connect().await;
    other
        .execute_unprepared("SELECT count(*) FROM sqlite_master")
        .await
        .expect("read");
    server.register("alice").await;
    assert!(server.terminate().success());
    let copy = db.sqlite_file().with_extension("copy.db");
    std::fs::copy(db.sqlite_file(), &copy).expect("copy the file alone");
    let copied = sea_orm::Database::connect(format!("sqlite://{}?mode=ro", copy.display()))
        .await
        .expect("open the copy");
    let users = copied
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Sqlite,
            "SELECT count(*) FROM users",
        ))
        .await
        .expect("the copy holds the users table")
        .and_then(|row| row.try_get_by_index::<i64>(0).ok());
    assert_eq!(users, Some(1));
    let _ = copied.close().await;
    let _ = other.close().await;
}

/// A large import renews PostgreSQL's statistics of the users table at once: until autovacuum
/// does, the planner would judge searches by the table as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_large_import_renews_the_planner_statistics() {
    let Some(app) = support::TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let hash = password_hash();
    let analysed = "SELECT count(*) FROM pg_stat_user_tables \
                    WHERE relname = 'users' AND last_analyze IS NOT NULL";
    let rows: Vec<_> = (0..1010)
        .map(|i| serde_json::json!({"username": format!("user{i}"), "email": format!("user{i}@example.com"), "passwordHash": hash}))
        .collect();
    let import = |rows: &[serde_json::Value]| {
        let (url, rows) = (
            app.db.url.clone(),
            serde_json::to_string(rows).expect("JSON"),
        );
        tokio::task::spawn_blocking(move || run_cli(&url, &["user", "import", "-"], &rows))
    };
    // A small one is left to autovacuum.
    assert_succeeded(&import(&rows[..10]).await.expect("the command ran"));
    assert_eq!(app.count(analysed).await, 0);
    assert_succeeded(&import(&rows[10..]).await.expect("the command ran"));
    support::eventually("the table analysed", async || {
        app.count(analysed).await == 1
    })
    .await;
}

/// An argon2 hash of [`PASSWORD`], as another system would export it for `user import`.
fn password_hash() -> String {
    argon2::PasswordHasher::hash_password(&argon2::Argon2::default(), PASSWORD.as_bytes())
        .expect("hashed")
        .to_string()
}
