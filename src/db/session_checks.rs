//! The per-request session check on PostgreSQL, with concurrent requests coalesced.
//!
//! Every authenticated request must find its session live and its user at the moment it
//! arrives (revocation is immediate), so nothing is cached between requests. Under load,
//! though, many requests wait for the same lookup at once: while a check is on its way to the
//! database, the requests that arrive queue, and the next query checks them all together
//! (`sessions.id = ANY($1)`: one prepared statement, one round trip per batch). A request
//! that finds nothing running goes out at once, with no timer. Each check is sent after its
//! request arrived, so it sees every revocation committed before that. A check may bring one
//! more user to look up by id (`user(id:)`), answered by the same query.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sea_orm::DbErr;
use sea_orm::sqlx::{self, Row as _};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::UserColumns;
use super::entities::user::Model as User;
use super::pinned::PinnedReads;

/// Batches on their way to the database at once. One: a batch is a few index lookups, so one
/// connection keeps up with the server, and checks that arrive meanwhile gather into the
/// next batch; fewer, larger batches cost the database less than many small ones.
const MAX_RUNNING: usize = 1;
/// Sessions per query; a longer queue is split.
const MAX_BATCH: usize = 512;

const SESSIONS: &str = "SELECT s.id AS checked_session, u.* FROM sessions s \
    JOIN users u ON u.id = s.user_id \
    WHERE s.id = ANY($1) AND s.revoked_at IS NULL";
/// [`SESSIONS`] plus users by id, told apart by a null `checked_session`.
const SESSIONS_AND_USERS: &str = "SELECT s.id AS checked_session, u.* FROM sessions s \
    JOIN users u ON u.id = s.user_id \
    WHERE s.id = ANY($1) AND s.revoked_at IS NULL \
    UNION ALL SELECT NULL, u.* FROM users u WHERE u.id = ANY($2)";

/// The session's user, and the other user asked for.
type Answer = (Option<User>, Option<User>);
type Reply = oneshot::Sender<Result<Answer, String>>;

struct Waiter {
    user: Uuid,
    session: Uuid,
    other: Option<Uuid>,
    reply: Reply,
}

/// What one batch found.
#[derive(Default)]
struct Found {
    by_session: HashMap<Uuid, User>,
    by_id: HashMap<Uuid, User>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiter>,
    running: usize,
}

pub struct SessionChecks {
    reads: PinnedReads,
    statements: Arc<AtomicU64>,
    queue: Mutex<Queue>,
}

impl SessionChecks {
    /// Checks run on connections of their own, one per runner.
    pub fn connect(url: &str, statements: Arc<AtomicU64>) -> Result<Self, DbErr> {
        Ok(Self {
            reads: PinnedReads::new(url, MAX_RUNNING as u32)?,
            statements,
            queue: Mutex::new(Queue::default()),
        })
    }

    /// User `user` if session `session` is theirs and not revoked, and user `other` if asked.
    pub async fn check(
        self: &Arc<Self>,
        user: Uuid,
        session: Uuid,
        other: Option<Uuid>,
    ) -> Result<Answer, DbErr> {
        let (reply, answer) = oneshot::channel();
        let start_runner = {
            let mut queue = self.lock();
            queue.waiting.push(Waiter {
                user,
                session,
                other,
                reply,
            });
            let start = queue.running < MAX_RUNNING;
            if start {
                queue.running += 1;
            }
            start
        };
        if start_runner {
            // A task of its own, so that no request's cancellation can strand the queue.
            tokio::spawn(self.clone().run());
        }
        answer
            .await
            .map_err(|_| DbErr::Custom("session check abandoned".into()))?
            .map_err(DbErr::Custom)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The lock guards plain pushes and drains, which cannot leave the queue inconsistent.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends queued checks until the queue is empty.
    async fn run(self: Arc<Self>) {
        // Gives the runner's place back if the task is dropped or panics mid-batch.
        struct Running<'a>(&'a SessionChecks);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.lock().running -= 1;
            }
        }
        let running = Running(&self);
        loop {
            // Requests that are ready to run queue their checks first: under load the batch
            // grows without a timer, and an idle server loses nothing by it.
            tokio::task::yield_now().await;
            let batch: Vec<Waiter> = {
                let mut queue = self.lock();
                if queue.waiting.is_empty() {
                    // Under the same lock that saw the queue empty, so a check queued right
                    // after finds a free place and starts a runner of its own.
                    queue.running -= 1;
                    drop(queue);
                    std::mem::forget(running);
                    return;
                }
                let take = queue.waiting.len().min(MAX_BATCH);
                queue.waiting.drain(..take).collect()
            };
            match self.query(&batch).await {
                Ok(found) => {
                    for waiter in batch {
                        let user = found
                            .by_session
                            .get(&waiter.session)
                            .filter(|user| user.id == waiter.user)
                            .cloned();
                        let other = waiter.other.and_then(|id| found.by_id.get(&id).cloned());
                        let _ = waiter.reply.send(Ok((user, other)));
                    }
                }
                Err(err) => {
                    let message = err.to_string();
                    for waiter in batch {
                        let _ = waiter.reply.send(Err(message.clone()));
                    }
                }
            }
        }
    }

    /// The live sessions among the batch's, with their users, and the users asked for by id.
    async fn query(&self, batch: &[Waiter]) -> Result<Found, DbErr> {
        let mut sessions: Vec<Uuid> = batch.iter().map(|waiter| waiter.session).collect();
        sessions.sort_unstable();
        sessions.dedup();
        let mut others: Vec<Uuid> = batch.iter().filter_map(|waiter| waiter.other).collect();
        others.sort_unstable();
        others.dedup();
        self.statements.fetch_add(1, Ordering::Relaxed);
        let query = if others.is_empty() {
            sqlx::query(SESSIONS).bind(sessions)
        } else {
            sqlx::query(SESSIONS_AND_USERS).bind(sessions).bind(others)
        };
        let rows = self.reads.fetch(query).await?;
        let rows = UserColumns::read_all(&rows, |row, user| {
            let session: Option<Uuid> = row
                .try_get("checked_session")
                .map_err(|err| DbErr::Type(err.to_string()))?;
            Ok((session, user))
        })?;
        let mut found = Found::default();
        for (session, user) in rows {
            match session {
                Some(session) => found.by_session.insert(session, user),
                None => found.by_id.insert(user.id, user),
            };
        }
        Ok(found)
    }
}
