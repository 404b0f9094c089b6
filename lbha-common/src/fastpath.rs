//! The decision the XDP program makes for every accepted advert: does it tell
//! the state machine anything new (wake user space), or is it the master
//! repeating itself (queue it silently and let the last-advert map answer)?

use crate::event::{AdvertEvent, change};

/// Adverts further apart than this many intervals count as "after silence".
/// Three intervals is the core of RFC 5798's Master_Down_Interval, so a gap
/// that long is one a backup would already be acting on.
pub const SILENCE_INTERVALS: u64 = 3;

const NS_PER_CENTISECOND: u64 = 10_000_000;

/// Gap after which an advert is reported as [`change::AFTER_SILENCE`].
#[inline(always)]
pub fn silence_threshold_ns(interval_cs: u16) -> u64 {
    SILENCE_INTERVALS * u64::from(interval_cs) * NS_PER_CENTISECOND
}

/// Returns the [`change`] bits of `next` relative to `previous` (the last
/// advert seen for the VRID; a zero timestamp means none). Zero means the
/// advert can be submitted without waking user space.
#[inline(always)]
pub fn classify(previous: &AdvertEvent, next: &AdvertEvent) -> u8 {
    let mut flags = 0;
    if next.priority == 0 {
        // Every resignation matters: backups must act within Skew_Time.
        flags |= change::RESIGN;
    }
    if previous.timestamp_ns == 0 || previous.src_addr != next.src_addr {
        return flags | change::NEW_SOURCE;
    }
    if previous.priority != next.priority {
        flags |= change::PRIORITY;
    }
    if previous.interval_cs != next.interval_cs {
        flags |= change::INTERVAL;
    }
    if previous.version != next.version {
        flags |= change::VERSION;
    }
    let gap = next.timestamp_ns.saturating_sub(previous.timestamp_ns);
    if gap > silence_threshold_ns(previous.interval_cs) {
        flags |= change::AFTER_SILENCE;
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn advert(ts_ms: u64, src: u8, priority: u8, interval_cs: u16) -> AdvertEvent {
        AdvertEvent {
            timestamp_ns: ts_ms * MS,
            src_addr: [10, 0, 0, src],
            vrid: 51,
            priority,
            interval_cs,
            version: 3,
            ..AdvertEvent::default()
        }
    }

    #[test]
    fn first_advert_wakes() {
        let none = AdvertEvent::default();
        assert_eq!(classify(&none, &advert(5, 1, 100, 100)), change::NEW_SOURCE);
    }

    #[test]
    fn steady_master_does_not_wake() {
        let prev = advert(1000, 1, 100, 100);
        assert_eq!(classify(&prev, &advert(2000, 1, 100, 100)), 0);
        // Jitter up to the threshold is still steady state.
        assert_eq!(classify(&prev, &advert(4000, 1, 100, 100)), 0);
    }

    #[test]
    fn changes_wake_with_their_reason() {
        let prev = advert(1000, 1, 100, 100);
        assert_eq!(
            classify(&prev, &advert(2000, 2, 100, 100)),
            change::NEW_SOURCE
        );
        assert_eq!(classify(&prev, &advert(2000, 1, 90, 100)), change::PRIORITY);
        assert_eq!(
            classify(&prev, &advert(2000, 1, 0, 100)),
            change::PRIORITY | change::RESIGN
        );
        assert_eq!(classify(&prev, &advert(2000, 1, 100, 50)), change::INTERVAL);
        assert_eq!(
            classify(&prev, &advert(4001, 1, 100, 100)),
            change::AFTER_SILENCE
        );
        let mut v2 = advert(2000, 1, 100, 100);
        v2.version = 2;
        assert_eq!(classify(&prev, &v2), change::VERSION);
    }

    #[test]
    fn repeated_resignation_always_wakes() {
        let prev = advert(1000, 1, 0, 100);
        assert_eq!(classify(&prev, &advert(1010, 1, 0, 100)), change::RESIGN);
    }

    #[test]
    fn clock_going_backwards_is_not_silence() {
        let prev = advert(5000, 1, 100, 100);
        assert_eq!(classify(&prev, &advert(4000, 1, 100, 100)), 0);
    }
}
