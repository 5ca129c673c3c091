//! The call records in SQL, through one code path for PostgreSQL and SQLite
//! (`sqlx::Any`): the SQL here is the common subset of both (`$N` placeholders,
//! `ON CONFLICT ... DO UPDATE ... WHERE`, row values, BIGINT times in ms).
//!
//! Every snapshot is applied in one transaction, and only when it is newer than
//! the stored record (the version check is the `WHERE` of the upsert itself), so
//! applying the same or an older revision again changes nothing.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::error::HistoryError;
use crate::record::{
    Applied, AttendeeSnapshot, CallPage, CallSnapshot, Forgotten, Millis, MissedCalls, Outcome,
    UserRef,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Largest page of [`HistoryStore::list_user_calls`] and [`HistoryStore::missed_calls`].
pub const MAX_PAGE: u32 = 100;
/// Page size when the caller gives none.
pub const DEFAULT_PAGE: u32 = 20;
/// Calls removed per transaction by [`HistoryStore::prune`].
pub const PRUNE_BATCH: i64 = 1000;

/// The database behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A cheap-to-clone handle on the history database (a connection pool).
#[derive(Clone, Debug)]
pub struct HistoryStore {
    pool: AnyPool,
    backend: Backend,
}

const CALL_COLUMNS: &str = "c.call_id, c.initiator_id, c.initiator_username, c.is_video, \
     c.created_at_ms, c.ended_at_ms, c.version";

impl HistoryStore {
    /// Connects to `url` (`postgres://...`, `sqlite://path`, `sqlite:path` or
    /// `sqlite::memory:`) and applies the embedded migrations. A SQLite file and
    /// its folder are created when missing.
    pub async fn connect(url: &str) -> Result<Self, HistoryError> {
        sqlx::any::install_default_drivers();
        let (backend, url, options) = if url.starts_with("postgres://")
            || url.starts_with("postgresql://")
        {
            (
                Backend::Postgres,
                url.to_owned(),
                AnyPoolOptions::new().max_connections(8),
            )
        } else if url.starts_with("sqlite:") {
            let (url, memory) = sqlite_url(url)?;
            let options = if memory {
                // One connection for ever: each connection to `:memory:` is its own database.
                AnyPoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
            } else {
                AnyPoolOptions::new()
                    .max_connections(4)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // Readers do not block the writer (gateway + tests share a file).
                            sqlx::query("PRAGMA journal_mode = WAL")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
            };
            (Backend::Sqlite, url, options)
        } else {
            return Err(HistoryError::InvalidArgument(
                "HISTORY_DATABASE_URL must start with postgres://, postgresql:// or sqlite:".into(),
            ));
        };
        let pool = options
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await?;
        // Processes starting together on one SQLite file can race on the first
        // migration (PostgreSQL takes a lock): the SQL is idempotent, so retry.
        let mut attempt = 0;
        while let Err(error) = MIGRATOR.run(&pool).await {
            attempt += 1;
            if attempt == 3 {
                return Err(error.into());
            }
            tracing::warn!(%error, "history migration failed; retrying");
            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
        }
        Ok(HistoryStore { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool, waiting for connections in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Writes `snapshot` unless the stored record is as new or newer. One
    /// transaction; users who asked to be forgotten are left out.
    pub async fn apply(&self, snapshot: &CallSnapshot) -> Result<Applied, HistoryError> {
        let version = i64::try_from(snapshot.version)
            .map_err(|_| HistoryError::InvalidArgument("version is too large".into()))?;
        let mut tx = self.pool.begin().await?;
        let forgotten = forgotten_among(&mut tx, snapshot).await?;
        let initiator = if forgotten.contains(snapshot.initiator.id.as_str()) {
            anonymous()
        } else {
            snapshot.initiator.clone()
        };
        let written = sqlx::query(
            "INSERT INTO calls (call_id, initiator_id, initiator_username, is_video, \
                 created_at_ms, ended_at_ms, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (call_id) DO UPDATE SET \
                 initiator_id = excluded.initiator_id, \
                 initiator_username = excluded.initiator_username, \
                 is_video = excluded.is_video, \
                 created_at_ms = excluded.created_at_ms, \
                 ended_at_ms = excluded.ended_at_ms, \
                 version = excluded.version \
             WHERE calls.version < excluded.version",
        )
        .bind(&snapshot.call_id)
        .bind(&initiator.id)
        .bind(&initiator.username)
        .bind(i64::from(snapshot.is_video))
        .bind(snapshot.created_at)
        .bind(snapshot.ended_at)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        if written.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Applied::Stale);
        }
        for table in ["attendees", "user_calls"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE call_id = $1"))
                .bind(&snapshot.call_id)
                .execute(&mut *tx)
                .await?;
        }
        // One row per user: a user listed twice keeps their last entry.
        let mut attendees: Vec<&AttendeeSnapshot> = Vec::new();
        for a in &snapshot.attendees {
            if forgotten.contains(a.user.id.as_str()) {
                continue;
            }
            match attendees.iter_mut().find(|x| x.user.id == a.user.id) {
                Some(slot) => *slot = a,
                None => attendees.push(a),
            }
        }
        if !attendees.is_empty() {
            let sql = format!(
                "INSERT INTO attendees (call_id, user_id, username, position, invited_at_ms, \
                     joined_at_ms, left_at_ms, outcome, created_at_ms) VALUES {}",
                placeholders(attendees.len(), 9)
            );
            let mut query = sqlx::query(&sql);
            for (position, a) in attendees.iter().enumerate() {
                query = query
                    .bind(&snapshot.call_id)
                    .bind(&a.user.id)
                    .bind(&a.user.username)
                    .bind(position as i64)
                    .bind(a.invited_at)
                    .bind(a.joined_at)
                    .bind(a.left_at)
                    .bind(a.outcome.as_str())
                    .bind(snapshot.created_at);
            }
            query.execute(&mut *tx).await?;
        }
        let mut users: Vec<&str> = Vec::new();
        if !initiator.id.is_empty() {
            users.push(&initiator.id);
        }
        for a in &attendees {
            if !users.contains(&a.user.id.as_str()) {
                users.push(&a.user.id);
            }
        }
        if !users.is_empty() {
            let sql = format!(
                "INSERT INTO user_calls (user_id, call_id, created_at_ms) VALUES {}",
                placeholders(users.len(), 3)
            );
            let mut query = sqlx::query(&sql);
            for user in users {
                query = query
                    .bind(user)
                    .bind(&snapshot.call_id)
                    .bind(snapshot.created_at);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(Applied::Yes)
    }

    /// One call's record.
    pub async fn get_call(&self, call_id: &str) -> Result<CallSnapshot, HistoryError> {
        let row = sqlx::query(&format!(
            "SELECT {CALL_COLUMNS} FROM calls c WHERE c.call_id = $1"
        ))
        .bind(call_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| HistoryError::CallNotFound(call_id.to_owned()))?;
        let mut calls = self.with_attendees(vec![row]).await?;
        calls
            .pop()
            .ok_or_else(|| HistoryError::CallNotFound(call_id.to_owned()))
    }

    /// `user_id`'s calls (initiated, invited to or joined), newest first, from
    /// the position `page_token` names (a token of a previous page, or `None`).
    /// Keyset pagination on (start time, call id): calls added meanwhile never
    /// shift a later page.
    pub async fn list_user_calls(
        &self,
        user_id: &str,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<CallPage, HistoryError> {
        let size = page_limit(page_size);
        let limit = i64::from(size) + 1;
        let rows =
            match page_token {
                None => sqlx::query(&format!(
                    "SELECT {CALL_COLUMNS} FROM user_calls u JOIN calls c ON c.call_id = u.call_id \
                     WHERE u.user_id = $1 \
                     ORDER BY u.created_at_ms DESC, u.call_id DESC LIMIT $2"
                ))
                .bind(user_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
                Some(token) => {
                    let (before_ms, before_id) = decode_token(token)?;
                    sqlx::query(&format!(
                    "SELECT {CALL_COLUMNS} FROM user_calls u JOIN calls c ON c.call_id = u.call_id \
                     WHERE u.user_id = $1 AND (u.created_at_ms, u.call_id) < ($2, $3) \
                     ORDER BY u.created_at_ms DESC, u.call_id DESC LIMIT $4"
                ))
                .bind(user_id)
                .bind(before_ms)
                .bind(before_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
                }
            };
        let mut calls = self.with_attendees(rows).await?;
        let next = if calls.len() > size as usize {
            calls.truncate(size as usize);
            calls.last().map(|c| encode_token(c.created_at, &c.call_id))
        } else {
            None
        };
        Ok(CallPage { calls, next })
    }

    /// Calls `user_id` missed (invitations that ended missed or cancelled:
    /// nobody answered them) that started after `since`: their count, and the
    /// newest `limit` of them.
    pub async fn missed_calls(
        &self,
        user_id: &str,
        since: Millis,
        limit: u32,
    ) -> Result<MissedCalls, HistoryError> {
        let summary = sqlx::query(
            "SELECT COUNT(*) AS n, MAX(created_at_ms) AS newest FROM attendees \
             WHERE user_id = $1 AND (outcome = $2 OR outcome = $4) AND created_at_ms > $3",
        )
        .bind(user_id)
        .bind(Outcome::Missed.as_str())
        .bind(since)
        .bind(Outcome::Cancelled.as_str())
        .fetch_one(&self.pool)
        .await?;
        let count: i64 = summary.try_get("n")?;
        let newest: Option<i64> = summary.try_get("newest")?;
        if count == 0 {
            return Ok(MissedCalls {
                count: 0,
                calls: Vec::new(),
                newest: None,
            });
        }
        let rows = sqlx::query(&format!(
            "SELECT {CALL_COLUMNS} FROM attendees a JOIN calls c ON c.call_id = a.call_id \
             WHERE a.user_id = $1 AND (a.outcome = $2 OR a.outcome = $5) AND a.created_at_ms > $3 \
             ORDER BY a.created_at_ms DESC, a.call_id DESC LIMIT $4"
        ))
        .bind(user_id)
        .bind(Outcome::Missed.as_str())
        .bind(since)
        .bind(i64::from(page_limit(limit)))
        .bind(Outcome::Cancelled.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(MissedCalls {
            count: count as u64,
            calls: self.with_attendees(rows).await?,
            newest,
        })
    }

    /// Until when `user_id` has seen their missed calls (`None`: never).
    pub async fn seen_until(&self, user_id: &str) -> Result<Option<Millis>, HistoryError> {
        let row = sqlx::query("SELECT seen_until_ms FROM user_marks WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => Some(row.try_get("seen_until_ms")?),
            None => None,
        })
    }

    /// Moves `user_id`'s mark forward to `until`; never backward.
    pub async fn mark_seen(&self, user_id: &str, until: Millis) -> Result<(), HistoryError> {
        sqlx::query(
            "INSERT INTO user_marks (user_id, seen_until_ms) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET seen_until_ms = excluded.seen_until_ms \
             WHERE user_marks.seen_until_ms < excluded.seen_until_ms",
        )
        .bind(user_id)
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Right to be forgotten: removes `user_id`'s attendee rows and marks,
    /// removes the calls they initiated that nobody else is left in, and
    /// anonymises the initiator (empty id and name) of the others, which stay in
    /// their attendees' history. A tombstone keeps later revisions of calls that
    /// started before now from bringing the user back.
    pub async fn delete_user(&self, user_id: &str, now: Millis) -> Result<Forgotten, HistoryError> {
        let mut tx = self.pool.begin().await?;
        let attendee_rows = sqlx::query("DELETE FROM attendees WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM user_calls WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let calls_removed = sqlx::query(
            "DELETE FROM calls WHERE initiator_id = $1 AND NOT EXISTS \
             (SELECT 1 FROM user_calls u WHERE u.call_id = calls.call_id)",
        )
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let anonymous = anonymous();
        let calls_anonymised = sqlx::query(
            "UPDATE calls SET initiator_id = $2, initiator_username = $3 WHERE initiator_id = $1",
        )
        .bind(user_id)
        .bind(&anonymous.id)
        .bind(&anonymous.username)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM user_marks WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO forgotten_users (user_id, forgotten_at_ms) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET forgotten_at_ms = excluded.forgotten_at_ms",
        )
        .bind(user_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Forgotten {
            attendee_rows,
            calls_anonymised,
            calls_removed,
        })
    }

    /// Removes the calls that started before `cutoff`; returns how many. In
    /// batches of [`PRUNE_BATCH`] calls, one transaction each, so that a large
    /// backlog never holds one long transaction.
    pub async fn prune(&self, cutoff: Millis) -> Result<u64, HistoryError> {
        let mut removed = 0;
        loop {
            let batch: Vec<String> = sqlx::query(
                "SELECT call_id FROM calls WHERE created_at_ms < $1 \
                 ORDER BY created_at_ms LIMIT $2",
            )
            .bind(cutoff)
            .bind(PRUNE_BATCH)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| row.try_get("call_id"))
            .collect::<Result<_, _>>()?;
            if batch.is_empty() {
                return Ok(removed);
            }
            let list = (1..=batch.len())
                .map(|n| format!("${n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut tx = self.pool.begin().await?;
            for table in ["attendees", "user_calls", "calls"] {
                let sql = format!("DELETE FROM {table} WHERE call_id IN ({list})");
                let mut query = sqlx::query(&sql);
                for call_id in &batch {
                    query = query.bind(call_id);
                }
                let done = query.execute(&mut *tx).await?;
                if table == "calls" {
                    removed += done.rows_affected();
                }
            }
            tx.commit().await?;
        }
    }

    /// Number of call records stored.
    pub async fn count_calls(&self) -> Result<u64, HistoryError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM calls")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(n as u64)
    }

    /// Turns `calls` rows into records, with their attendees (one more query).
    async fn with_attendees(&self, rows: Vec<AnyRow>) -> Result<Vec<CallSnapshot>, HistoryError> {
        let mut calls = rows
            .iter()
            .map(call_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        if calls.is_empty() {
            return Ok(calls);
        }
        let sql = format!(
            "SELECT call_id, user_id, username, invited_at_ms, joined_at_ms, left_at_ms, outcome \
             FROM attendees WHERE call_id IN ({}) ORDER BY call_id, position",
            (1..=calls.len())
                .map(|n| format!("${n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut query = sqlx::query(&sql);
        for call in &calls {
            query = query.bind(call.call_id.clone());
        }
        let mut by_call: HashMap<String, Vec<AttendeeSnapshot>> = HashMap::new();
        for row in query.fetch_all(&self.pool).await? {
            let call_id: String = row.try_get("call_id")?;
            let outcome: String = row.try_get("outcome")?;
            let attendee = AttendeeSnapshot {
                user: UserRef {
                    id: row.try_get("user_id")?,
                    username: row.try_get("username")?,
                },
                invited_at: row.try_get("invited_at_ms")?,
                joined_at: row.try_get("joined_at_ms")?,
                left_at: row.try_get("left_at_ms")?,
                outcome: Outcome::parse(&outcome)
                    .ok_or_else(|| HistoryError::Corrupt(format!("outcome {outcome:?}")))?,
            };
            by_call.entry(call_id).or_default().push(attendee);
        }
        for call in &mut calls {
            call.attendees = by_call.remove(&call.call_id).unwrap_or_default();
        }
        Ok(calls)
    }
}

fn call_from_row(row: &AnyRow) -> Result<CallSnapshot, HistoryError> {
    let version: i64 = row.try_get("version")?;
    let is_video: i64 = row.try_get("is_video")?;
    Ok(CallSnapshot {
        call_id: row.try_get("call_id")?,
        initiator: UserRef {
            id: row.try_get("initiator_id")?,
            username: row.try_get("initiator_username")?,
        },
        is_video: is_video != 0,
        created_at: row.try_get("created_at_ms")?,
        ended_at: row.try_get("ended_at_ms")?,
        version: version as u64,
        attendees: Vec::new(),
    })
}

/// Which of the snapshot's users asked to be forgotten after the call started.
async fn forgotten_among(
    tx: &mut Transaction<'_, Any>,
    snapshot: &CallSnapshot,
) -> Result<HashSet<String>, HistoryError> {
    let users = snapshot.user_ids();
    let sql = format!(
        "SELECT user_id FROM forgotten_users WHERE forgotten_at_ms >= $1 AND user_id IN ({})",
        (2..users.len() + 2)
            .map(|n| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut query = sqlx::query(&sql).bind(snapshot.created_at);
    for user in users {
        query = query.bind(user);
    }
    let rows = query.fetch_all(&mut **tx).await?;
    rows.iter()
        .map(|row| row.try_get::<String, _>("user_id").map_err(Into::into))
        .collect()
}

/// Who a forgotten initiator becomes.
fn anonymous() -> UserRef {
    UserRef {
        id: String::new(),
        username: String::new(),
    }
}

fn page_limit(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

/// `($1, $2, ...), ($n+1, ...)` for `rows` rows of `columns` values.
fn placeholders(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let row = (1..=columns)
                .map(|c| format!("${}", r * columns + c))
                .collect::<Vec<_>>()
                .join(", ");
            format!("({row})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The opaque page token: the key of the last call of the page.
fn encode_token(created_at: Millis, call_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{created_at}:{call_id}"))
}

fn decode_token(token: &str) -> Result<(Millis, String), HistoryError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| HistoryError::InvalidPageToken)?;
    let text = String::from_utf8(bytes).map_err(|_| HistoryError::InvalidPageToken)?;
    let (ms, call_id) = text.split_once(':').ok_or(HistoryError::InvalidPageToken)?;
    let ms = ms.parse().map_err(|_| HistoryError::InvalidPageToken)?;
    Ok((ms, call_id.to_owned()))
}

/// Splits a `sqlite:` URL into the URL to connect with and whether it is in
/// memory; creates the folder of a file and asks for the file to be created.
fn sqlite_url(url: &str) -> Result<(String, bool), HistoryError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    if path == ":memory:" || path.is_empty() || query.is_some_and(|q| q.contains("mode=memory")) {
        return Ok((url.to_owned(), true));
    }
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|error| {
            HistoryError::InvalidArgument(format!(
                "cannot create the folder of the SQLite file {path:?}: {error}"
            ))
        })?;
    }
    Ok(match query {
        Some(query) if query.contains("mode=") => (url.to_owned(), false),
        Some(query) => (format!("sqlite://{path}?{query}&mode=rwc"), false),
        None => (format!("sqlite://{path}?mode=rwc"), false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_junk_is_refused() {
        let token = encode_token(1_700_000_000_123, "call:with:colons");
        assert_eq!(
            decode_token(&token).ok(),
            Some((1_700_000_000_123, "call:with:colons".to_owned()))
        );
        assert!(matches!(
            decode_token("%%%"),
            Err(HistoryError::InvalidPageToken)
        ));
        assert!(matches!(
            decode_token(&URL_SAFE_NO_PAD.encode("nocolon")),
            Err(HistoryError::InvalidPageToken)
        ));
    }

    #[test]
    fn placeholders_number_rows_in_order() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_limit(0), DEFAULT_PAGE);
        assert_eq!(page_limit(5), 5);
        assert_eq!(page_limit(10_000), MAX_PAGE);
    }
}
