//! The decision the XDP program makes for every accepted advert: does it tell
//! the state machine anything new (wake user space), or is it the master
//! repeating itself (queue it silently and let the last-advert map answer)?

use crate::event::{AdvertEvent, change, same_addr};

const NS_PER_CENTISECOND: u64 = 10_000_000;

/// Gap after which a VRID counts as silent: `intervals` advert intervals
/// (the VRID's `down_timer_adverts`, [`crate::VridConfig::silence_intervals`]),
/// the core of its Master_Down_Interval, so a gap that long is one a backup
/// acts on after Skew_Time more. The kernel's silence timer fires after it,
/// and an advert after such a gap is reported as [`change::AFTER_SILENCE`].
#[inline(always)]
pub fn silence_threshold_ns(interval_cs: u16, intervals: u8) -> u64 {
    u64::from(intervals) * u64::from(interval_cs) * NS_PER_CENTISECOND
}

/// Returns the [`change`] bits of `next` relative to `previous` (the last
/// advert seen for the VRID; a zero timestamp means none), for a VRID that
/// counts as silent after `silence_intervals` intervals. Zero means the
/// advert can be submitted without waking user space.
#[inline(always)]
pub fn classify(previous: &AdvertEvent, next: &AdvertEvent, silence_intervals: u8) -> u8 {
    let mut flags = 0;
    if next.priority == 0 {
        // Every resignation matters: backups must act within Skew_Time.
        flags |= change::RESIGN;
    }
    if previous.timestamp_ns == 0 || !same_addr(&previous.src_addr, &next.src_addr) {
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
    if gap > silence_threshold_ns(previous.interval_cs, silence_intervals) {
        flags |= change::AFTER_SILENCE;
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    /// RFC 5798's three intervals.
    const RFC: u8 = 3;

    fn classify(previous: &AdvertEvent, next: &AdvertEvent) -> u8 {
        super::classify(previous, next, RFC)
    }

    fn advert(ts_ms: u64, src: u8, priority: u8, interval_cs: u16) -> AdvertEvent {
        AdvertEvent {
            timestamp_ns: ts_ms * MS,
            src_addr: crate::event::wire_v4([10, 0, 0, src]),
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
    fn silence_threshold_is_the_vrids_down_timer_adverts() {
        assert_eq!(silence_threshold_ns(100, 3), 3_000 * MS);
        assert_eq!(silence_threshold_ns(10, 1), 100 * MS);
        assert_eq!(silence_threshold_ns(4095, 100), 4_095_000 * MS);
        let prev = advert(1000, 1, 100, 100);
        // One interval: a gap just over it is silence, one at it is not.
        assert_eq!(super::classify(&prev, &advert(2000, 1, 100, 100), 1), 0);
        assert_eq!(
            super::classify(&prev, &advert(2001, 1, 100, 100), 1),
            change::AFTER_SILENCE
        );
        // Ten intervals: nine and a half seconds is still a steady master.
        assert_eq!(super::classify(&prev, &advert(10_500, 1, 100, 100), 10), 0);
        assert_eq!(
            super::classify(&prev, &advert(11_001, 1, 100, 100), 10),
            change::AFTER_SILENCE
        );
    }

    #[test]
    fn clock_going_backwards_is_not_silence() {
        let prev = advert(5000, 1, 100, 100);
        assert_eq!(classify(&prev, &advert(4000, 1, 100, 100)), 0);
    }
}
