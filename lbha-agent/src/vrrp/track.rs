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
    effective_priority_with_files(base, tracks, &[])
}

/// One tracked file as it weighs on an instance (keepalived `track_file`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileWeighted {
    pub weight: i32,
    pub reverse: bool,
    /// The number in the file.
    pub value: i64,
}

/// keepalived 2.2.7's `update_track_file_status` and
/// `process_update_vrrp_track_file_status`: what a file adds to the
/// priority, None for FAULT. With weight 0 a non-zero value is FAULT (with
/// `reverse`, zero is); otherwise value x weight, negated by `reverse`,
/// clamped to -254..=253, where -254 is FAULT.
pub fn file_status(file: FileWeighted) -> Option<i32> {
    if file.weight == 0 {
        return ((file.value != 0) == file.reverse).then_some(0);
    }
    let sign = if file.reverse { -1 } else { 1 };
    let status = i128::from(file.value) * i128::from(file.weight) * sign;
    match status.clamp(-254, 253) {
        -254 => None,
        s => Some(s as i32),
    }
}

/// [`effective_priority`] with tracked files besides.
pub fn effective_priority_with_files(
    base: u8,
    tracks: &[Weighted],
    files: &[FileWeighted],
) -> (u8, bool) {
    let mut fault = false;
    let mut priority = i32::from(base);
    for file in files {
        match file_status(*file) {
            Some(add) => priority += add,
            None => fault = true,
        }
    }
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

    fn file(weight: i32, reverse: bool, value: i64) -> FileWeighted {
        FileWeighted {
            weight,
            reverse,
            value,
        }
    }

    #[test]
    fn file_weight_zero_faults_on_non_zero() {
        assert_eq!(file_status(file(0, false, 0)), Some(0));
        assert_eq!(file_status(file(0, false, 1)), None);
        assert_eq!(file_status(file(0, false, -7)), None);
        // reverse: zero is the failure.
        assert_eq!(file_status(file(0, true, 0)), None);
        assert_eq!(file_status(file(0, true, 3)), Some(0));
    }

    #[test]
    fn file_value_is_multiplied_by_the_weight_and_clamped() {
        assert_eq!(file_status(file(1, false, 20)), Some(20));
        assert_eq!(file_status(file(-10, false, 3)), Some(-30));
        assert_eq!(file_status(file(10, true, 3)), Some(-30));
        assert_eq!(file_status(file(-2, true, 4)), Some(8));
        // 253 at most; -253 is the lowest that is not FAULT.
        assert_eq!(file_status(file(1, false, 1000)), Some(253));
        assert_eq!(file_status(file(1, false, -253)), Some(-253));
        assert_eq!(file_status(file(1, false, -254)), None);
        assert_eq!(file_status(file(254, false, -1)), None);
        assert_eq!(file_status(file(-254, false, 1)), None);
        // No overflow at the extremes of the value and weight.
        assert_eq!(file_status(file(254, false, i64::MIN)), None);
        assert_eq!(file_status(file(-254, false, i64::MIN)), Some(253));
    }

    #[test]
    fn files_add_to_the_priority_within_1_to_254() {
        let p = |files: &[FileWeighted]| effective_priority_with_files(100, &[], files);
        assert_eq!(p(&[file(1, false, 20)]), (120, false));
        assert_eq!(p(&[file(1, false, 20), file(-1, false, 50)]), (70, false));
        assert_eq!(p(&[file(1, false, 200)]), (254, false));
        assert_eq!(p(&[file(1, false, -200)]), (1, false));
        assert_eq!(p(&[file(1, false, -254)]), (100, true));
        // With checks too.
        assert_eq!(
            effective_priority_with_files(100, &[w(-30, false)], &[file(2, false, 5)]),
            (80, false)
        );
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
