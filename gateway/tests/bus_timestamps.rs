//! Timestamps that come from peers (bus events, service snapshots) are rendered
//! for browsers without panicking, whatever their value: a regression test for
//! what fuzzing the bus messages found (a `joinedAt` after year 9999 panicked).

use meetup_gateway::mirror::iso_time;
use prost_types::Timestamp;

#[test]
fn out_of_range_timestamps_render_as_now_instead_of_panicking() {
    for seconds in [i64::MIN, -5, 253_402_300_800, 300_000_000_000, i64::MAX] {
        let text = iso_time(Some(Timestamp { seconds, nanos: 0 }));
        assert!(text.ends_with('Z') && text.len() == 24, "{seconds}: {text}");
    }
    assert_eq!(
        iso_time(Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_000_000
        })),
        "2023-11-14T22:13:20.123Z"
    );
}
