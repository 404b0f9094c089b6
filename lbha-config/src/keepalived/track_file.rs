//! keepalived 2.2.7's `track_file` (`trackers/track_file.c`): the
//! top-level definition (`track_file NAME { ... }`, and its deprecated
//! synonym `vrrp_track_file`), and the `track_file { ... }` blocks of
//! instances and sync groups, which refer to a definition by name.

use std::path::PathBuf;

use super::{Cx, FieldLines, Statement, block_name, block_of, list_block};
use crate::{TrackFile, TrackFileInit};

/// keepalived's range for a track file's weights (`read_int_strvec(..,
/// -254, 254)`): 254 lets a file holding -1 take an instance to FAULT.
const WEIGHT_RANGE: std::ops::RangeInclusive<i64> = -254..=254;

/// An instance's or group's `track_file` entry, its weight and direction
/// resolved from the definition as keepalived resolves them when the block
/// is read (`vrrp_alloc_track_file`): (name, weight, reverse, line).
pub(super) type FileTrack = (String, i32, bool, usize);

/// `track_file NAME { file PATH; weight N [reverse]; init_file [VALUE]
/// [overwrite] }`: the definition, or None after reporting why keepalived
/// drops it.
pub(super) fn definition(s: &Statement, cx: &mut Cx) -> Option<(TrackFile, FieldLines)> {
    let kw = s.keyword();
    let (name, fl) = block_name(s, cx, kw);
    let context = format!("{kw} `{name}`: ");
    let context = context.as_str();
    let mut path: Option<PathBuf> = None;
    let mut weight: Option<(i32, bool)> = None;
    let mut init: Option<TrackFileInit> = None;
    for item in block_of(s, cx, context) {
        let line = item.line();
        match item.keyword() {
            "file" => {
                let Some(word) = cx.one_arg(item, context) else {
                    continue;
                };
                if path.is_some() {
                    cx.warn(
                        line,
                        format!("{context}`file` given again; keepalived keeps the first, and so does lbha"),
                    );
                } else {
                    path = Some(PathBuf::from(&word.text));
                }
            }
            "weight" => {
                if weight.is_some() {
                    cx.warn(
                        line,
                        format!("{context}`weight` given again; keepalived keeps the first, and so does lbha"),
                    );
                    continue;
                }
                let args = item.args();
                let Some(n) = args.first() else {
                    cx.error(line, format!("{context}`weight` needs a number"));
                    continue;
                };
                let Some(w) = n
                    .text
                    .parse::<i64>()
                    .ok()
                    .filter(|w| WEIGHT_RANGE.contains(w))
                else {
                    cx.error(
                        line,
                        format!("{context}`weight` must be -254..=254 (got `{}`)", n.text),
                    );
                    continue;
                };
                let reverse = match &args[1..] {
                    [] => false,
                    [r] if r.text == "reverse" => true,
                    extra => {
                        cx.extra_words(line, extra, context, "weight N [reverse]");
                        false
                    }
                };
                weight = Some((w as i32, reverse));
            }
            "init_file" => {
                let mut value = 0;
                let mut overwrite = false;
                for word in item.args() {
                    let text = word.text.trim_start();
                    if text.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
                        match text.parse::<i32>() {
                            Ok(v) => {
                                if !(WEIGHT_RANGE).contains(&i64::from(v)) {
                                    cx.warn(
                                        word.line,
                                        format!("{context}`init_file` value {v} is outside the sensible range -254..=254 (keepalived's warning); written as given"),
                                    );
                                }
                                value = i64::from(v);
                            }
                            Err(_) => cx.error(
                                word.line,
                                format!("{context}`init_file` value `{text}` is not an integer"),
                            ),
                        }
                    } else if text == "overwrite" {
                        overwrite = true;
                    } else {
                        cx.error(
                            word.line,
                            format!("{context}`init_file`: unknown option `{text}` (VALUE or `overwrite`)"),
                        );
                    }
                }
                init = Some(TrackFileInit { value, overwrite });
            }
            _ => cx.unknown(item, context),
        }
    }
    let Some(path) = path else {
        cx.error(
            s.line(),
            format!("{context}no `file`: keepalived ignores this track_file, so what tracks it would track nothing"),
        );
        return None;
    };
    let (weight, reverse) = weight.unwrap_or((1, false));
    Some((
        TrackFile {
            name,
            path,
            weight,
            reverse,
            init,
        },
        fl,
    ))
}

/// A `track_file { NAME [weight N [reverse|noreverse]] ... }` block of an
/// instance or a sync group. keepalived looks each name up among the
/// definitions read so far (a definition after the instance is not
/// found), and drops an entry it cannot read; lbha refuses those.
pub(super) fn block(
    item: &Statement,
    defined: &[(TrackFile, FieldLines)],
    context: &str,
    cx: &mut Cx,
) -> Vec<FileTrack> {
    let mut tracked: Vec<FileTrack> = Vec::new();
    for entry in list_block(item, context, cx) {
        let name = entry.keyword();
        let line = entry.line();
        let Some((file, _)) = defined.iter().find(|(f, _)| f.name == name) else {
            cx.error(
                line,
                format!("{context}`track_file` {name}: no track_file of that name is defined before this block; keepalived ignores it, so nothing would be tracked"),
            );
            continue;
        };
        if tracked.iter().any(|t| t.0 == name) {
            cx.warn(
                line,
                format!("{context}`track_file` {name} given again; keepalived ignores this one, and so does lbha"),
            );
            continue;
        }
        let (mut weight, mut reverse) = (file.weight, file.reverse);
        match entry.args() {
            [] => {}
            [w, rest @ ..] if w.text == "weight" => {
                let Some(n) = rest.first() else {
                    cx.error(
                        line,
                        format!("{context}`track_file` {name}: `weight` needs a number"),
                    );
                    continue;
                };
                match n.text.parse::<i64>() {
                    Ok(w) if WEIGHT_RANGE.contains(&w) => weight = w as i32,
                    _ => {
                        cx.error(
                            line,
                            format!(
                                "{context}`track_file` {name}: `weight` must be -254..=254 (got `{}`)",
                                n.text
                            ),
                        );
                        continue;
                    }
                }
                match &rest[1..] {
                    [] => {}
                    [r] if r.text == "reverse" => reverse = true,
                    [r] if r.text == "noreverse" => reverse = false,
                    extra => {
                        cx.error(
                            line,
                            format!(
                                "{context}`track_file` {name}: unknown weight option `{}` (reverse or noreverse); keepalived ignores the entry",
                                extra[0].text
                            ),
                        );
                        continue;
                    }
                }
            }
            [other, ..] => {
                cx.error(
                    line,
                    format!(
                        "{context}`track_file` {name}: unknown option `{}` (weight N [reverse|noreverse]); keepalived ignores the entry",
                        other.text
                    ),
                );
                continue;
            }
        }
        tracked.push((name.to_string(), weight, reverse, line));
    }
    tracked
}

/// Adds a block's entries to what the instance or group already tracks:
/// keepalived ignores a file tracked twice, whichever block it is in.
pub(super) fn add(into: &mut Vec<FileTrack>, tracked: Vec<FileTrack>, context: &str, cx: &mut Cx) {
    for t in tracked {
        if into.iter().any(|e| e.0 == t.0) {
            cx.warn(
                t.3,
                format!("{context}`track_file` {} given again; keepalived ignores this one, and so does lbha", t.0),
            );
        } else {
            into.push(t);
        }
    }
}

/// keepalived's rule for an address owner, and for a sync group member
/// without `sync_group_tracking_weight` (`vrrp_complete_instance`): a file
/// tracked with the default weight 1 becomes unweighted (non-zero means
/// FAULT); one with any other weight is not tracked at all.
pub(super) fn unweight(tracked: &mut Vec<FileTrack>, context: &str, why: &str, cx: &mut Cx) {
    tracked.retain_mut(|(name, weight, _, line)| {
        match *weight {
            0 => true,
            1 => {
                cx.warn(
                    *line,
                    format!("{context}tracked file `{name}`: its weight is ignored because of the {why} (keepalived's rule: a non-zero value means FAULT); specify weight 0 to say so"),
                );
                *weight = 0;
                true
            }
            w => {
                cx.warn(
                    *line,
                    format!("{context}tracked file `{name}` with weight {w}: keepalived ignores it because of the {why}, and so does lbha (it is not tracked)"),
                );
                false
            }
        }
    });
}
