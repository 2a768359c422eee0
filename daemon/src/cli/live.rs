//! The rollout live view, in the spirit of `kubectl argo rollouts get rollout --watch`: a block
//! redrawn in place on a terminal (one row per step, every group in the current step, what the
//! step waits for, the verdict and its numbers), that never exceeds the terminal's width, so it
//! never wraps and each redraw replaces the last exactly. Without a terminal: one plain line per
//! change. The text is built here from a `RolloutStatus`, purely; `Screen` draws it.

use std::{fmt::Write as _, io::Write as _, time::Duration};

use super::output;
use crate::{
    api::protocol::{RolloutStatus, WaitingFor},
    rollout::Phase,
};

/// The width a frame is built for when the terminal does not say.
pub(super) const DEFAULT_WIDTH: usize = 80;

/// `running`, `rolled back` ...
fn phase(p: Phase) -> &'static str {
    match p {
        Phase::Running => "running",
        Phase::Paused => "paused",
        Phase::Completed => "completed",
        Phase::RolledBack => "rolled back",
        Phase::Aborted => "aborted",
    }
}

/// `45s`, `2m05s`, `1h02m`.
pub(super) fn short_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

fn weights(w: &[(String, crate::model::Weight)]) -> String {
    w.iter()
        .map(|(g, w)| format!("{g}={w}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the step waits for, in words (none when the rollout is not running).
fn waiting(r: &RolloutStatus) -> Option<String> {
    if r.phase != Phase::Running {
        return None;
    }
    let skipped = if r.pause_skipped {
        " (pause skipped by promote)"
    } else {
        ""
    };
    let text = match &r.waiting_for {
        Some(WaitingFor::Pause {
            seconds_left,
            last_step: true,
        }) => format!("the pause: {seconds_left}s left, then it completes"),
        Some(WaitingFor::Pause { seconds_left, .. }) => format!(
            "the pause: {seconds_left}s left, then step {}/{}",
            r.step + 1,
            r.steps.len()
        ),
        Some(WaitingFor::MinFlows { seen, needed }) => {
            format!("new flows to {}: {seen} of {needed}{skipped}", r.to)
        }
        Some(WaitingFor::Gates { gates }) => {
            format!("gates running: {}{skipped}", gates.join(", "))
        }
        Some(WaitingFor::Judge { outcome }) => format!(
            "the canary judge: {}{skipped}",
            match outcome {
                None => "no look yet",
                Some(crate::rollout::judge::Outcome::NotEnoughData) => "not enough data yet",
                Some(_) => "a pass at the end of the pause",
            }
        ),
        None => format!("nothing: stepping{skipped}"),
    };
    Some(text)
}

/// The verdict and its numbers.
fn verdict(r: &RolloutStatus) -> String {
    let reason = r.reason.as_deref().unwrap_or("");
    let Some(v) = &r.verdict else {
        return phase(r.phase).to_owned();
    };
    let numbers = format!(
        "{} of {} new flows to {} failed ({:.2}%, at most {}% allowed)",
        v.failed_flows, v.new_flows, r.to, v.failure_rate, v.max_failure_rate
    );
    match r.phase {
        Phase::Completed => format!(
            "completed: every new flow goes to {}; last step {numbers}",
            r.to
        ),
        Phase::RolledBack => format!("rolled back: {reason}"),
        Phase::Aborted => format!("aborted: {reason}"),
        Phase::Paused => format!("paused: {reason}; this step {numbers}"),
        Phase::Running if v.judged => format!("healthy so far: {numbers}"),
        Phase::Running => format!(
            "not judged yet ({} of {} new flows needed): {numbers}",
            v.new_flows, v.min_flows
        ),
    }
}

/// Cuts `line` to `width` characters (the last one an ellipsis when cut).
fn fit(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `text` wrapped at spaces to `width`, lines after the first indented by `indent` spaces.
fn wrap(text: &str, width: usize, indent: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let blank = line.trim().is_empty();
        if !blank && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::replace(&mut line, " ".repeat(indent)));
        }
        if !line.trim().is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.trim().is_empty() {
        lines.push(line);
    }
    lines.into_iter().map(|l| fit(&l, width)).collect()
}

/// The block for a terminal `width` columns wide and `height` rows high: no line is wider, and
/// a plan with more steps than fit shows its first steps done as one line.
pub(super) fn frame_sized(r: &RolloutStatus, width: usize, height: usize) -> Vec<String> {
    let full = frame(r, width);
    // One row stays free for the cursor below the block.
    let room = height.saturating_sub(1).max(8);
    if full.len() <= room {
        return full;
    }
    let mut shown = r.clone();
    let cut = (full.len() - room + 1).min(
        r.progress
            .iter()
            .take_while(|s| s.state == "done" || s.state == "skipped")
            .count(),
    );
    if cut < 2 {
        return full.into_iter().take(room).collect();
    }
    shown.progress.drain(..cut);
    let mut lines = frame(&shown, width);
    // After the head, the blank line and the table's heading.
    lines.insert(3, fit(&format!("1-{cut}  (steps before: done)"), width));
    lines.into_iter().take(room).collect()
}

/// The block for a terminal `width` columns wide: no line is wider.
pub(super) fn frame(r: &RolloutStatus, width: usize) -> Vec<String> {
    let width = width.max(20);
    let mut lines = Vec::new();
    let mut head = format!(
        "rollout {} -> {}: {}, step {}/{} ({}%)",
        r.service,
        r.to,
        phase(r.phase),
        r.step,
        r.steps.len(),
        r.share
    );
    if !matches!(
        r.phase,
        Phase::Completed | Phase::RolledBack | Phase::Aborted
    ) {
        let _ = write!(head, ", {} in step", short_duration(r.step_seconds));
    }
    lines.push(head);
    lines.push(String::new());
    let steps: Vec<Vec<String>> = r
        .progress
        .iter()
        .map(|s| {
            vec![
                s.step.to_string(),
                format!("{}%", s.share),
                weights(&s.weights),
                s.state.clone(),
                s.seconds.map_or_else(|| "-".to_owned(), short_duration),
                s.new_flows
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                s.failed_flows
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            ]
        })
        .collect();
    lines.extend(
        output::table(
            &["STEP", "SHARE", "WEIGHTS", "STATE", "TIME", "NEW", "FAILED"],
            &steps,
        )
        .lines()
        .map(str::to_owned),
    );
    lines.push(String::new());
    let groups: Vec<Vec<String>> = r
        .groups
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                format!("{}%", g.weight),
                g.active_flows.to_string(),
                g.new_flows_per_second
                    .map_or_else(|| "-".to_owned(), |x| format!("{x:.1}")),
                g.new_flows
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                g.failed_flows
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            ]
        })
        .collect();
    lines.extend(
        output::table(
            &[
                "GROUP",
                "WEIGHT",
                "ACTIVE",
                "NEW/S",
                "NEW IN STEP",
                "FAILED IN STEP",
            ],
            &groups,
        )
        .lines()
        .map(str::to_owned),
    );
    lines.push(String::new());
    if let Some(w) = waiting(r) {
        lines.extend(wrap(&format!("waits for: {w}"), width, 11));
    }
    lines.extend(wrap(&format!("verdict: {}", verdict(r)), width, 9));
    lines.into_iter().map(|l| fit(&l, width)).collect()
}

/// One plain line: step, weights, the target's flows and failures in the step, what it waits
/// for (or how it ended).
pub(super) fn line(r: &RolloutStatus) -> String {
    let state = match r.phase {
        Phase::Running => waiting(r).unwrap_or_default(),
        _ => verdict(r),
    };
    format!(
        "rollout {} -> {}: step {}/{} ({}%) {} | {} | step: {} new, {} failed | {state}",
        r.service,
        r.to,
        r.step,
        r.steps.len(),
        r.share,
        phase(r.phase),
        weights(&r.weights),
        r.in_step.attempted,
        r.in_step.failed,
    )
}

/// What makes a plain line worth printing: the step, the phase, what the step waits for (not
/// how long), a promotion.
pub(super) fn change_key(r: &RolloutStatus) -> String {
    let waits = match &r.waiting_for {
        Some(WaitingFor::Pause { .. }) => "pause",
        Some(WaitingFor::MinFlows { .. }) => "min_flows",
        Some(WaitingFor::Gates { .. }) => "gates",
        Some(WaitingFor::Judge { .. }) => "judge",
        None => "",
    };
    format!(
        "{}/{:?}/{waits}/{}/{:?}",
        r.step, r.phase, r.pause_skipped, r.reason
    )
}

/// A block redrawn in place: each draw moves up over the last one, rewrites every line and
/// clears what is left below.
#[derive(Debug, Default)]
pub(super) struct Screen {
    drawn: usize,
}

impl Screen {
    /// Draws `lines` over the previous block.
    pub(super) fn draw(&mut self, lines: &[String]) {
        let mut buf = String::new();
        if self.drawn > 0 {
            // Cursor to the start of the line `drawn` lines up (CPL).
            let _ = write!(buf, "\x1b[{}F", self.drawn);
        }
        for l in lines {
            // Erase the line, write it.
            let _ = writeln!(buf, "\x1b[2K{l}");
        }
        // Erase everything below (a shorter block leaves no stale line).
        buf.push_str("\x1b[J");
        self.drawn = lines.len();
        let mut out = std::io::stdout().lock();
        // A frame that fails to show is replaced by the next one.
        drop(out.write_all(buf.as_bytes()).and_then(|()| out.flush()));
    }
}

/// The size (columns, rows) of the terminal on stdout, if it is one that says.
pub(super) fn terminal_size() -> Option<(usize, usize)> {
    // SAFETY: an all-zero winsize is a valid value for TIOCGWINSZ to fill.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we own; stdout is fd 1.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &raw mut ws) };
    (rc == 0 && ws.ws_col > 0).then(|| {
        let rows = if ws.ws_row > 0 { ws.ws_row } else { 24 };
        (usize::from(ws.ws_col), usize::from(rows))
    })
}

/// The width of the terminal on stdout, if it is one that says.
pub(super) fn terminal_width() -> Option<usize> {
    terminal_size().map(|(cols, _)| cols)
}

/// How often a watch asks the daemon.
pub(super) const POLL: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::protocol::{RolloutGroupStatus, StepCounts, StepStatus, VerdictStatus},
        model::{Plan, Weight},
    };

    fn w(s: &str) -> Weight {
        Weight::from_percent_str(s).unwrap()
    }

    fn status(phase: Phase, step: usize, waiting_for: Option<WaitingFor>) -> RolloutStatus {
        let shares = ["1", "5", "25", "50", "100"];
        let state = |i: usize| match i.cmp(&step) {
            std::cmp::Ordering::Less => "done",
            std::cmp::Ordering::Equal => "running",
            std::cmp::Ordering::Greater => "pending",
        };
        RolloutStatus {
            service: "web-frontend-production".into(),
            to: "v2-canary-2024".into(),
            phase,
            step,
            steps: shares.iter().map(|s| w(s)).collect(),
            share: w(shares[step - 1]),
            weights: vec![
                ("v1-stable-2023".into(), w("75")),
                ("v2-canary-2024".into(), w("25")),
            ],
            in_step: StepCounts {
                attempted: 165,
                failed: 0,
            },
            waiting: None,
            reason: None,
            plan: Plan::to("v2-canary-2024"),
            waiting_for,
            pause_skipped: false,
            step_seconds: 12,
            progress: shares
                .iter()
                .enumerate()
                .map(|(i, s)| StepStatus {
                    step: i + 1,
                    share: w(s),
                    weights: vec![
                        ("v1-stable-2023".into(), w("50")),
                        ("v2-canary-2024".into(), w("50")),
                    ],
                    state: state(i + 1).into(),
                    seconds: (i < step).then_some(30),
                    new_flows: (i < step).then_some(1234),
                    failed_flows: (i < step).then_some(0),
                })
                .collect(),
            groups: vec![RolloutGroupStatus {
                name: "v1-stable-2023".into(),
                weight: w("75"),
                active_flows: 120,
                new_flows: Some(495),
                failed_flows: Some(0),
                new_flows_per_second: Some(41.2),
            }],
            verdict: Some(VerdictStatus {
                new_flows: 165,
                failed_flows: 0,
                failure_rate: 0.0,
                max_failure_rate: w("1"),
                min_flows: 10,
                judged: true,
            }),
            judge: None,
        }
    }

    #[test]
    fn a_frame_never_exceeds_80_columns_and_shows_every_step() {
        let gates = WaitingFor::Gates {
            gates: vec!["prometheus:http://127.0.0.1:9090 sum(rate(http_requests_total{code=~\"5..\"}[1m])) < 1".into(); 3],
        };
        for waiting in [
            Some(WaitingFor::Pause {
                seconds_left: 18,
                last_step: false,
            }),
            Some(WaitingFor::MinFlows {
                seen: 3,
                needed: 10,
            }),
            Some(gates),
            None,
        ] {
            let f = frame(&status(Phase::Running, 3, waiting), 80);
            for l in &f {
                assert!(l.chars().count() <= 80, "{l:?} is wider than 80 columns");
            }
            let rows: Vec<&String> = f
                .iter()
                .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
                .collect();
            assert_eq!(rows.len(), 5, "one row per step: {f:#?}");
            let state = |s: &str| rows.iter().filter(|l| l.contains(s)).count();
            assert_eq!(
                (state(" done "), state(" running "), state(" pending")),
                (2, 1, 2)
            );
        }
    }

    #[test]
    fn a_plan_taller_than_the_terminal_folds_its_first_steps() {
        let mut r = status(Phase::Running, 3, None);
        let more: Vec<StepStatus> = (6..=30)
            .map(|i| StepStatus {
                step: i,
                ..r.progress[4].clone()
            })
            .collect();
        r.progress[4].state = "done".into();
        r.progress.extend(more);
        for (i, s) in r.progress.iter_mut().enumerate() {
            s.state = if i < 20 { "done" } else { "pending" }.into();
        }
        let f = frame_sized(&r, 80, 24);
        assert!(f.len() <= 23, "{f:#?}");
        assert!(f.iter().any(|l| l.contains("steps before: done")), "{f:#?}");
        assert!(
            f.iter().any(|l| l.starts_with("30 ")),
            "the last step shows: {f:#?}"
        );
    }

    #[test]
    fn the_last_step_completes_rather_than_steps_on() {
        let f = frame(
            &status(
                Phase::Running,
                5,
                Some(WaitingFor::Pause {
                    seconds_left: 3,
                    last_step: true,
                }),
            ),
            80,
        )
        .join("\n");
        assert!(f.contains("3s left, then it completes"), "{f}");
        assert!(!f.contains("then step"), "{f}");
    }

    #[test]
    fn text_wraps_at_spaces_within_the_width() {
        let lines = wrap(
            "verdict: rolled back: failure-rate: 5 of 12 new flows to `v2` failed (41.67% > 1%)",
            40,
            9,
        );
        assert!(lines.len() > 1);
        for l in &lines {
            assert!(l.chars().count() <= 40, "{l:?}");
        }
        assert!(lines[1].starts_with("         "));
        assert_eq!(
            lines
                .join(" ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            "verdict: rolled back: failure-rate: 5 of 12 new flows to `v2` failed (41.67% > 1%)"
        );
    }
}
