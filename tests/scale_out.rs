//! Scale-out: two `rollcall` processes on one database behave as one service.

mod support;

use support::{Backend, Gql, ServerProcess, Session, TestDb, assert_code, error_code};

/// A reuse grace short enough to wait out, so that a replay counts as reuse.
const GRACE: &[(&str, &str)] = &[("ROLLCALL_REFRESH_REUSE_GRACE", "200ms")];

struct Pair {
    a: ServerProcess,
    b: ServerProcess,
}

impl Pair {
    /// The first or the second process.
    fn on(&self, first: bool) -> &ServerProcess {
        if first { &self.a } else { &self.b }
    }
}

async fn two_processes_share_one_database(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    // Neither process is given a key: both must agree on the one generated in the database.
    let pair = Pair {
        a: ServerProcess::start(&db.url, GRACE),
        b: ServerProcess::start(&db.url, GRACE),
    };

    let owner = pair.on(true).register("owner").await;
    let mut ids = Vec::new();
    for name in ["ann", "ben", "cat"] {
        ids.push(pair.on(false).create_user(&owner, name, "STANDARD").await);
    }

    // A token issued by one instance is accepted by the other.
    let ann = pair.on(true).login_as("ann").await;
    let me = pair.on(false).me(&ann.access).await;
    assert_eq!(me["data"]["me"]["username"], "ann", "{me}");

    // A refresh token rotated on one and replayed on the other after the grace is reuse: the
    // family dies.
    let rotated = pair.on(true).refresh(&ann.refresh).await;
    let newest = Session::from_payload(&rotated, "refreshToken");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let replay = pair.on(false).refresh(&ann.refresh).await;
    assert_code(&replay, "UNAUTHENTICATED");
    let after = pair.on(true).refresh(&newest.refresh).await;
    assert_code(&after, "UNAUTHENTICATED");

    // A user disabled through one instance is refused at once by the other.
    let ben = pair.on(false).login_as("ben").await;
    let body = pair.on(true).disable(&owner, &ids[1]).await;
    assert_eq!(body["data"]["updateUser"]["disabled"], true, "{body}");
    let me = pair.on(false).me(&ben.access).await;
    assert_code(&me, "UNAUTHENTICATED");

    // Ownership transfers racing on both instances leave exactly one owner.
    let people = [
        ("owner", owner.id.clone()),
        ("ann", ids[0].clone()),
        ("cat", ids[2].clone()),
    ];
    let mut current = 0;
    for round in 0..3 {
        let session = pair.on(round % 2 == 0).login_as(people[current].0).await;
        let others: Vec<usize> = (0..people.len()).filter(|i| *i != current).collect();
        let (x, y) = tokio::join!(
            pair.on(true)
                .set_role(&session, &people[others[0]].1, "OWNER"),
            pair.on(false)
                .set_role(&session, &people[others[1]].1, "OWNER"),
        );
        let won: Vec<usize> = [(&x, others[0]), (&y, others[1])]
            .iter()
            .filter(|(body, _)| body["data"]["setRole"]["role"] == "OWNER")
            .map(|(_, who)| *who)
            .collect();
        assert_eq!(won.len(), 1, "round {round}: one transfer wins: {x} {y}");
        // The loser is refused: FORBIDDEN when its caller was authenticated before the winner
        // committed (a transfer demotes the caller only while it is still the owner), and
        // UNAUTHENTICATED when after (the transfer ended the caller's sessions).
        let lost = if won[0] == others[0] { &y } else { &x };
        assert!(
            matches!(error_code(lost), Some("FORBIDDEN" | "UNAUTHENTICATED")),
            "round {round}: the losing transfer is refused: {lost}"
        );
        assert!(lost["data"]["setRole"].is_null(), "round {round}: {lost}");
        let mut owners = Vec::new();
        for (name, _) in &people {
            if pair.on(round % 2 == 1).login_as(name).await.role == "OWNER" {
                owners.push(*name);
            }
        }
        assert_eq!(
            owners,
            [people[won[0]].0],
            "round {round}: exactly one owner"
        );
        current = won[0];
    }
    assert!(pair.a.terminate().success());
    assert!(pair.b.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_processes() {
    two_processes_share_one_database(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_processes() {
    two_processes_share_one_database(Backend::Sqlite).await;
}

/// Instances deployed at the same moment on a new (or newly upgraded) database all come up:
/// they take turns at the migrations instead of failing on what another one just created.
async fn instances_starting_together(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    // A few milliseconds apart, as a deployment starts them: a later one can then meet an
    // earlier one's migration committing while it looks at the database.
    let starting: Vec<_> = (0..6)
        .map(|i| {
            std::thread::sleep(std::time::Duration::from_millis(5 * i));
            ServerProcess::spawn(&db.url, &[])
        })
        .collect();
    let servers: Vec<_> = starting
        .into_iter()
        .map(|server| server.listening())
        .collect();

    // They serve as one: a token issued by the first works on every other.
    let first = servers[0].register("first").await;
    for server in &servers[1..] {
        let me = server.me(&first.access).await;
        assert_eq!(me["data"]["me"]["username"], "first", "{me}");
    }
    for server in servers {
        assert!(server.terminate().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_starting_together() {
    instances_starting_together(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_instances_starting_together() {
    instances_starting_together(Backend::Sqlite).await;
}
