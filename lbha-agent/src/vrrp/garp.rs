//! When a Master announces its virtual addresses again: keepalived's
//! schedule of gratuitous ARP (IPv4) and unsolicited Neighbor
//! Advertisement (IPv6) sets, as a pure function of the instance's
//! [`Garp`] settings and the monotonic clock. A "set" is one frame per
//! address; the driver sends them.
//!
//! keepalived 2.2.7 (`vrrp.c`): on becoming Master, `garp_master_repeat`
//! sets at once and as many again after `garp_master_delay`; while Master,
//! `garp_master_refresh_repeat` sets every `garp_master_refresh`; and when
//! an advert with a lower priority arrives while Master (the other router
//! may have announced the addresses as its own), `garp_lower_prio_repeat`
//! sets at once and again after `garp_lower_prio_delay`.

use crate::config::Garp;

/// The bursts still to come for one instance: each field is its monotonic
/// deadline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GarpSchedule {
    /// The second master burst.
    master_burst: Option<u64>,
    /// The second lower-priority burst. keepalived starts one timer per
    /// lower-priority advert; one pending burst, pushed back by a later
    /// advert, announces the same with fewer frames.
    lower_prio_burst: Option<u64>,
    refresh: Option<u64>,
}

fn after(now: u64, delay: std::time::Duration) -> Option<u64> {
    (!delay.is_zero()).then(|| now.saturating_add(delay.as_nanos() as u64))
}

impl GarpSchedule {
    /// Became Master at `now`: the sets to send at once, and the later
    /// bursts scheduled.
    pub fn became_master(&mut self, garp: &Garp, now: u64) -> u32 {
        *self = Self {
            master_burst: after(now, garp.master_delay).filter(|_| garp.master_repeat > 0),
            lower_prio_burst: None,
            refresh: after(now, garp.master_refresh),
        };
        garp.master_repeat
    }

    /// A lower-priority advert arrived while Master: the sets to send at
    /// once (none when `lower_prio_repeat` is 0).
    pub fn lower_priority_advert(&mut self, garp: &Garp, now: u64) -> u32 {
        if garp.lower_prio_repeat == 0 {
            return 0;
        }
        if let Some(at) = after(now, garp.lower_prio_delay) {
            self.lower_prio_burst = Some(at);
        }
        garp.lower_prio_repeat
    }

    /// No longer Master: nothing more to announce.
    pub fn left_master(&mut self) {
        *self = Self::default();
    }

    /// When the next burst is due.
    pub fn next_due(&self) -> Option<u64> {
        [self.master_burst, self.lower_prio_burst, self.refresh]
            .into_iter()
            .flatten()
            .min()
    }

    /// The sets due at `now` (0 when none), with the refresh re-armed.
    pub fn poll(&mut self, garp: &Garp, now: u64) -> u32 {
        let mut sets = 0;
        if self.master_burst.is_some_and(|at| at <= now) {
            self.master_burst = None;
            sets += garp.master_repeat;
        }
        if self.lower_prio_burst.is_some_and(|at| at <= now) {
            self.lower_prio_burst = None;
            sets += garp.lower_prio_repeat;
        }
        if self.refresh.is_some_and(|at| at <= now) {
            // From now, as keepalived re-arms it when it sends.
            self.refresh = after(now, garp.master_refresh);
            sets += garp.master_refresh_repeat;
        }
        sets
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const S: u64 = 1_000_000_000;

    /// Every burst from `start` to `until` (in seconds), polled at each
    /// deadline: (seconds since start, sets).
    fn bursts(schedule: &mut GarpSchedule, garp: &Garp, start: u64, until: u64) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        while let Some(at) = schedule.next_due().filter(|&at| at <= start + until * S) {
            assert_eq!(
                schedule.poll(garp, at - 1),
                0,
                "nothing before its deadline"
            );
            out.push(((at - start) / S, schedule.poll(garp, at)));
        }
        out
    }

    #[test]
    fn keepalived_defaults_announce_five_sets_then_five_more_after_five_seconds() {
        let garp = Garp::default();
        let mut s = GarpSchedule::default();
        assert_eq!(s.next_due(), None);
        let start = 100 * S;
        assert_eq!(s.became_master(&garp, start), 5);
        assert_eq!(bursts(&mut s, &garp, start, 3600), vec![(5, 5)]);
        assert_eq!(s.next_due(), None, "no refresh by default");
    }

    #[test]
    fn refresh_repeats_while_master_and_stops_on_leaving() {
        let garp = Garp {
            master_repeat: 2,
            master_delay: Duration::ZERO,
            master_refresh: Duration::from_mins(1),
            master_refresh_repeat: 3,
            ..Garp::default()
        };
        let mut s = GarpSchedule::default();
        assert_eq!(s.became_master(&garp, 0), 2);
        assert_eq!(
            bursts(&mut s, &garp, 0, 180),
            vec![(60, 3), (120, 3), (180, 3)]
        );
        s.left_master();
        assert_eq!(s.next_due(), None);
        assert_eq!(s.poll(&garp, 1000 * S), 0);
    }

    #[test]
    fn a_lower_priority_advert_announces_again_now_and_after_its_delay() {
        let garp = Garp {
            lower_prio_repeat: 4,
            lower_prio_delay: Duration::from_secs(2),
            ..Garp::default()
        };
        let mut s = GarpSchedule::default();
        s.became_master(&garp, 0);
        assert_eq!(s.lower_priority_advert(&garp, 10 * S), 4);
        assert_eq!(bursts(&mut s, &garp, 0, 60), vec![(5, 5), (12, 4)]);
        // Off: nothing at once, nothing later.
        let off = Garp {
            lower_prio_repeat: 0,
            ..garp
        };
        assert_eq!(s.lower_priority_advert(&off, 20 * S), 0);
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn becoming_master_again_starts_over() {
        let garp = Garp::default();
        let mut s = GarpSchedule::default();
        s.became_master(&garp, 0);
        s.lower_priority_advert(&garp, S);
        s.left_master();
        s.became_master(&garp, 10 * S);
        assert_eq!(bursts(&mut s, &garp, 10 * S, 60), vec![(5, 5)]);
    }
}
