//! The history store against a real PostgreSQL (started by the harness) and
//! SQLite: the same scenarios on both, each on a fresh database.

use meetup_history::{
    Applied, AttendeeSnapshot, CallSnapshot, HistoryError, HistoryStore, Outcome, UserRef,
};
use meetup_tests::postgres::PostgresServer;

const T0: i64 = 1_700_000_000_000;

fn user(id: &str) -> UserRef {
    UserRef {
        id: id.to_owned(),
        username: format!("name-{id}"),
    }
}

fn attendee(
    id: &str,
    invited: Option<i64>,
    joined: Option<i64>,
    left: Option<i64>,
    outcome: Outcome,
) -> AttendeeSnapshot {
    AttendeeSnapshot {
        user: user(id),
        invited_at: invited,
        joined_at: joined,
        left_at: left,
        outcome,
    }
}

fn call(id: &str, initiator: &str, created: i64, version: u64) -> CallSnapshot {
    CallSnapshot {
        call_id: id.to_owned(),
        initiator: user(initiator),
        is_video: true,
        created_at: created,
        ended_at: None,
        version,
        attendees: Vec::new(),
    }
}

fn ids(calls: &[CallSnapshot]) -> Vec<&str> {
    calls.iter().map(|c| c.call_id.as_str()).collect()
}

fn outcome_of(call: &CallSnapshot, user_id: &str) -> Option<Outcome> {
    call.attendee(user_id).map(|a| a.outcome)
}

type Scenario = for<'a> fn(
    &'a HistoryStore,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + 'a>,
>;

const SCENARIOS: [(&str, Scenario); 8] = [
    ("answered", |s| Box::pin(answered_call(s))),
    ("missed", |s| Box::pin(missed_call(s))),
    ("declined", |s| Box::pin(declined_call(s))),
    ("three_party", |s| Box::pin(three_party_late_joiner(s))),
    ("pagination", |s| Box::pin(pagination_is_stable(s))),
    ("retention", |s| Box::pin(retention_prunes_old_calls(s))),
    ("deletion", |s| Box::pin(deletion_forgets_the_user(s))),
    ("idempotent", |s| {
        Box::pin(old_and_repeated_snapshots_change_nothing(s))
    }),
];

#[tokio::test]
async fn scenarios_on_postgres() -> anyhow::Result<()> {
    let server = PostgresServer::start().await?;
    for (name, scenario) in SCENARIOS {
        server.create_database(name)?;
        let store = HistoryStore::connect(&server.url(name)).await?;
        scenario(&store)
            .await
            .map_err(|e| e.context(format!("postgres: {name}")))?;
        store.close().await;
    }
    Ok(())
}

#[tokio::test]
async fn scenarios_on_sqlite() -> anyhow::Result<()> {
    for (name, scenario) in SCENARIOS {
        let store = HistoryStore::connect("sqlite::memory:").await?;
        scenario(&store)
            .await
            .map_err(|e| e.context(format!("sqlite: {name}")))?;
    }
    Ok(())
}

#[tokio::test]
async fn sqlite_files_are_created_with_their_folder() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("meetup-history-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("sqlite://{}/nested/history.db", dir.display());
    let store = HistoryStore::connect(&url).await?;
    store.apply(&call("c1", "a", T0, 1)).await?;
    store.close().await;
    // Reopened: the migrations are not applied twice and the record is there.
    let store = HistoryStore::connect(&url).await?;
    assert_eq!(store.get_call("c1").await?.version, 1);
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn answered_call(store: &HistoryStore) -> anyhow::Result<()> {
    let mut c = call("answered", "a", T0, 1);
    c.attendees = vec![attendee("b", Some(T0), None, None, Outcome::Ringing)];
    assert_eq!(store.apply(&c).await?, Applied::Yes);
    assert_eq!(
        outcome_of(&store.get_call("answered").await?, "b"),
        Some(Outcome::Ringing)
    );
    c.version = 2;
    c.attendees = vec![attendee(
        "b",
        Some(T0),
        Some(T0 + 3_000),
        None,
        Outcome::Answered,
    )];
    store.apply(&c).await?;
    c.version = 3;
    c.ended_at = Some(T0 + 60_000);
    c.attendees[0].left_at = Some(T0 + 60_000);
    store.apply(&c).await?;

    let stored = store.get_call("answered").await?;
    assert_eq!(stored, c, "the record is the last snapshot");
    for who in ["a", "b"] {
        let page = store.list_user_calls(who, 10, None).await?;
        assert_eq!(ids(&page.calls), ["answered"], "{who}");
        assert_eq!(page.next, None);
    }
    assert!(store.list_user_calls("x", 10, None).await?.calls.is_empty());
    assert_eq!(store.missed_calls("b", 0, 10).await?.count, 0);
    assert!(matches!(
        store.get_call("nope").await,
        Err(HistoryError::CallNotFound(_))
    ));
    Ok(())
}

async fn missed_call(store: &HistoryStore) -> anyhow::Result<()> {
    let mut c = call("missed", "a", T0, 1);
    c.attendees = vec![attendee("b", Some(T0), None, None, Outcome::Ringing)];
    store.apply(&c).await?;
    assert_eq!(
        store.missed_calls("b", 0, 10).await?.count,
        0,
        "ringing is not missed yet"
    );
    c.version = 2;
    c.ended_at = Some(T0 + 30_000);
    c.attendees[0].outcome = Outcome::Missed;
    store.apply(&c).await?;

    let missed = store.missed_calls("b", 0, 10).await?;
    assert_eq!((missed.count, ids(&missed.calls)), (1, vec!["missed"]));
    assert_eq!(missed.newest, Some(T0));
    assert_eq!(store.missed_calls("a", 0, 10).await?.count, 0);

    assert_eq!(store.seen_until("b").await?, None);
    store.mark_seen("b", T0).await?;
    store.mark_seen("b", T0 - 5).await?; // never backward
    assert_eq!(store.seen_until("b").await?, Some(T0));
    assert_eq!(store.missed_calls("b", T0, 10).await?.count, 0);

    // A later missed call counts again; the limit bounds the list, not the count.
    for n in 1..=3 {
        let mut later = call(&format!("missed-{n}"), "a", T0 + n * 1000, 2);
        later.ended_at = Some(T0 + n * 1000 + 500);
        later.attendees = vec![attendee("b", Some(T0), None, None, Outcome::Missed)];
        store.apply(&later).await?;
    }
    let missed = store.missed_calls("b", T0, 2).await?;
    assert_eq!(missed.count, 3);
    assert_eq!(ids(&missed.calls), ["missed-3", "missed-2"]);
    Ok(())
}

async fn declined_call(store: &HistoryStore) -> anyhow::Result<()> {
    let mut c = call("declined", "a", T0, 4);
    c.is_video = false;
    c.ended_at = Some(T0 + 2_000);
    c.attendees = vec![attendee("b", Some(T0), None, None, Outcome::Declined)];
    store.apply(&c).await?;
    let stored = store.get_call("declined").await?;
    assert!(!stored.is_video);
    assert_eq!(outcome_of(&stored, "b"), Some(Outcome::Declined));
    assert_eq!(store.missed_calls("b", 0, 10).await?.count, 0);
    assert_eq!(
        ids(&store.list_user_calls("b", 5, None).await?.calls),
        ["declined"]
    );
    Ok(())
}

async fn three_party_late_joiner(store: &HistoryStore) -> anyhow::Result<()> {
    let mut c = call("trio", "a", T0, 1);
    c.attendees = vec![
        attendee("b", Some(T0), None, None, Outcome::Ringing),
        attendee("c", Some(T0), None, None, Outcome::Ringing),
    ];
    store.apply(&c).await?;
    c.version = 2;
    c.attendees[0] = attendee("b", Some(T0), Some(T0 + 2_000), None, Outcome::Answered);
    store.apply(&c).await?;
    // c joins a minute late; d, never invited, comes in with the link.
    c.version = 3;
    c.attendees[1] = attendee("c", Some(T0), Some(T0 + 60_000), None, Outcome::Answered);
    c.attendees.push(attendee(
        "d",
        None,
        Some(T0 + 70_000),
        None,
        Outcome::Answered,
    ));
    store.apply(&c).await?;
    c.version = 4;
    c.ended_at = Some(T0 + 120_000);
    for a in &mut c.attendees {
        a.left_at = Some(T0 + 120_000);
    }
    store.apply(&c).await?;

    let stored = store.get_call("trio").await?;
    assert_eq!(stored, c);
    let late = stored.attendee("c").map(|a| (a.joined_at, a.outcome));
    assert_eq!(late, Some((Some(T0 + 60_000), Outcome::Answered)));
    assert_eq!(stored.attendee("d").and_then(|a| a.invited_at), None);
    for who in ["a", "b", "c", "d"] {
        assert_eq!(
            ids(&store.list_user_calls(who, 10, None).await?.calls),
            ["trio"]
        );
    }
    Ok(())
}

async fn pagination_is_stable(store: &HistoryStore) -> anyhow::Result<()> {
    // 25 calls of u, two of them at the same instant (the id breaks the tie).
    for n in 0..25i64 {
        let created = if n == 24 {
            T0 + 23 * 1000
        } else {
            T0 + n * 1000
        };
        let mut c = call(
            &format!("p{n:02}"),
            if n % 2 == 0 { "u" } else { "v" },
            created,
            1,
        );
        c.attendees = vec![attendee(
            if n % 2 == 0 { "v" } else { "u" },
            Some(created),
            None,
            None,
            Outcome::Answered,
        )];
        store.apply(&c).await?;
    }
    let mut seen = Vec::new();
    let first = store.list_user_calls("u", 10, None).await?;
    assert_eq!(ids(&first.calls)[..3], ["p24", "p23", "p22"]);
    seen.extend(first.calls.iter().map(|c| c.call_id.clone()));
    // New calls arrive between pages: newer ones, and one at the same instant
    // as a call already listed, with a larger id.
    for n in 25..30i64 {
        store
            .apply(&call(&format!("p{n:02}"), "u", T0 + n * 1000, 1))
            .await?;
    }
    store.apply(&call("p23z", "u", T0 + 23 * 1000, 1)).await?;
    let mut token = first.next;
    while let Some(t) = token {
        let page = store.list_user_calls("u", 10, Some(&t)).await?;
        seen.extend(page.calls.iter().map(|c| c.call_id.clone()));
        token = page.next;
    }
    let expected: Vec<String> = (0..25)
        .rev()
        .map(|n| format!("p{:02}", if n == 24 { 24 } else { n }))
        .collect();
    let mut expected_order = expected.clone();
    // p24 and p23 share an instant: p24 first (larger id), then p23.
    expected_order.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, expected_order, "no call skipped or repeated");
    assert!(matches!(
        store.list_user_calls("u", 10, Some("not-a-token!")).await,
        Err(HistoryError::InvalidPageToken)
    ));
    // The last page has no next token.
    let all = store.list_user_calls("u", 100, None).await?;
    assert_eq!(all.calls.len(), 31);
    assert_eq!(all.next, None);
    Ok(())
}

async fn retention_prunes_old_calls(store: &HistoryStore) -> anyhow::Result<()> {
    for (id, created) in [("old1", T0 - 10_000), ("old2", T0 - 1), ("new", T0)] {
        let mut c = call(id, "a", created, 1);
        c.attendees = vec![attendee("b", Some(created), None, None, Outcome::Missed)];
        store.apply(&c).await?;
    }
    assert_eq!(store.prune(T0).await?, 2);
    assert_eq!(store.count_calls().await?, 1);
    assert_eq!(
        ids(&store.list_user_calls("a", 10, None).await?.calls),
        ["new"]
    );
    let missed = store.missed_calls("b", 0, 10).await?;
    assert_eq!((missed.count, ids(&missed.calls)), (1, vec!["new"]));
    assert_eq!(store.prune(T0).await?, 0);
    // More than one batch.
    let batch = meetup_history::store::PRUNE_BATCH;
    for n in 0..batch + 5 {
        store
            .apply(&call(&format!("bulk-{n}"), "a", T0 + 1 + n, 1))
            .await?;
    }
    // ("new" goes too: it started before this cutoff.)
    assert_eq!(store.prune(T0 + 1 + batch + 5).await?, (batch + 6) as u64);
    assert_eq!(store.count_calls().await?, 0);
    Ok(())
}

async fn deletion_forgets_the_user(store: &HistoryStore) -> anyhow::Result<()> {
    // a called b; b called a; b called nobody who answered (only b in it).
    let mut ab = call("ab", "a", T0, 2);
    ab.attendees = vec![attendee(
        "b",
        Some(T0),
        Some(T0 + 1),
        None,
        Outcome::Answered,
    )];
    let mut ba = call("ba", "b", T0 + 10, 2);
    ba.attendees = vec![attendee("a", Some(T0 + 10), None, None, Outcome::Missed)];
    let solo = call("solo", "b", T0 + 20, 2);
    for c in [&ab, &ba, &solo] {
        store.apply(c).await?;
    }
    store.mark_seen("b", T0).await?;

    let forgotten = store.delete_user("b", T0 + 100).await?;
    assert_eq!(
        (
            forgotten.attendee_rows,
            forgotten.calls_anonymised,
            forgotten.calls_removed
        ),
        (1, 1, 1)
    );
    assert!(store.list_user_calls("b", 10, None).await?.calls.is_empty());
    assert_eq!(store.seen_until("b").await?, None);
    let a_calls = store.list_user_calls("a", 10, None).await?.calls;
    assert_eq!(ids(&a_calls), ["ba", "ab"]);
    assert_eq!(
        a_calls[0].initiator,
        UserRef {
            id: String::new(),
            username: String::new()
        }
    );
    assert!(a_calls[1].attendee("b").is_none());
    assert!(matches!(
        store.get_call("solo").await,
        Err(HistoryError::CallNotFound(_))
    ));
    assert_eq!(
        store.missed_calls("a", 0, 10).await?.count,
        1,
        "a keeps their own record"
    );

    // A later revision of a call from before the deletion does not bring b back.
    ab.version = 3;
    ab.ended_at = Some(T0 + 500);
    assert_eq!(store.apply(&ab).await?, Applied::Yes);
    assert!(store.get_call("ab").await?.attendee("b").is_none());
    assert!(store.list_user_calls("b", 10, None).await?.calls.is_empty());
    // A call after the deletion is recorded as usual.
    let mut later = call("later", "a", T0 + 1_000, 1);
    later.attendees = vec![attendee("b", Some(T0 + 1_000), None, None, Outcome::Missed)];
    store.apply(&later).await?;
    assert_eq!(
        ids(&store.list_user_calls("b", 10, None).await?.calls),
        ["later"]
    );
    Ok(())
}

async fn old_and_repeated_snapshots_change_nothing(store: &HistoryStore) -> anyhow::Result<()> {
    let mut v1 = call("idem", "a", T0, 1);
    v1.attendees = vec![attendee("b", Some(T0), None, None, Outcome::Ringing)];
    let mut v2 = v1.clone();
    v2.version = 2;
    v2.ended_at = Some(T0 + 5_000);
    v2.attendees = vec![
        attendee(
            "b",
            Some(T0),
            Some(T0 + 1_000),
            Some(T0 + 5_000),
            Outcome::Answered,
        ),
        attendee("c", Some(T0), None, None, Outcome::Missed),
    ];
    assert_eq!(store.apply(&v2).await?, Applied::Yes);
    assert_eq!(store.apply(&v2).await?, Applied::Stale);
    assert_eq!(store.apply(&v1).await?, Applied::Stale);
    assert_eq!(store.get_call("idem").await?, v2);
    assert_eq!(store.count_calls().await?, 1);
    for who in ["a", "b", "c"] {
        assert_eq!(store.list_user_calls(who, 10, None).await?.calls.len(), 1);
    }
    assert_eq!(store.missed_calls("c", 0, 10).await?.count, 1);
    // A user listed twice in one snapshot is stored once (the last entry).
    let mut v3 = v2.clone();
    v3.version = 3;
    v3.attendees.push(attendee(
        "c",
        Some(T0),
        Some(T0 + 4_000),
        None,
        Outcome::Answered,
    ));
    store.apply(&v3).await?;
    let stored = store.get_call("idem").await?;
    assert_eq!(stored.attendees.len(), 2);
    assert_eq!(outcome_of(&stored, "c"), Some(Outcome::Answered));
    Ok(())
}
