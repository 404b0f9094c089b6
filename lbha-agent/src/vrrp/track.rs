//! Tracked checks as keepalived defines them: how their (debounced, see
//! `health::debounce`) results set the effective priority or Fault.

/// One tracked check as it weighs on an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weighted {
    pub weight: i32,
    pub reverse: bool,
    pub up: bool,
}

/// keepalived's rule: with weight 0 a down check means Fault; a positive
/// weight is added while the check is up, a negative one while it is down;
/// `reverse` applies the opposite adjustment under the same condition. The result is clamped to 1..=254; the address
/// owner (255) keeps 255.
pub fn effective_priority(base: u8, tracks: &[Weighted]) -> (u8, bool) {
    let mut fault = false;
    let mut priority = i32::from(base);
    for track in tracks {
        if track.weight == 0 {
            fault |= !track.up;
            continue;
        }
        let applies = if track.weight > 0 {
            track.up
        } else {
            !track.up
        };
        if applies {
            priority += if track.reverse {
                -track.weight
            } else {
                track.weight
            };
        }
    }
    if base == 255 {
        return (255, fault);
    }
    (priority.clamp(1, 254) as u8, fault)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(weight: i32, up: bool) -> Weighted {
        Weighted {
            weight,
            reverse: false,
            up,
        }
    }

    #[test]
    fn weights_as_keepalived_applies_them() {
        assert_eq!(effective_priority(100, &[w(20, true)]), (120, false));
        assert_eq!(effective_priority(100, &[w(20, false)]), (100, false));
        assert_eq!(effective_priority(100, &[w(-30, false)]), (70, false));
        assert_eq!(effective_priority(100, &[w(-30, true)]), (100, false));
        assert_eq!(effective_priority(200, &[w(100, true)]), (254, false));
        assert_eq!(effective_priority(10, &[w(-50, false)]), (1, false));
        assert_eq!(effective_priority(255, &[w(-50, false)]), (255, false));
    }

    #[test]
    fn reverse_swaps_when_the_weight_applies() {
        let rev = |weight, up| Weighted {
            weight,
            reverse: true,
            up,
        };
        // weight 20 reverse: subtract 20 while up.
        assert_eq!(effective_priority(100, &[rev(20, true)]), (80, false));
        assert_eq!(effective_priority(100, &[rev(20, false)]), (100, false));
        // weight -20 reverse: add 20 while down.
        assert_eq!(effective_priority(100, &[rev(-20, false)]), (120, false));
        assert_eq!(effective_priority(100, &[rev(-20, true)]), (100, false));
    }

    #[test]
    fn weight_zero_down_is_fault() {
        assert_eq!(effective_priority(100, &[w(0, true)]), (100, false));
        assert_eq!(
            effective_priority(100, &[w(0, false), w(10, true)]),
            (110, true)
        );
    }
}
