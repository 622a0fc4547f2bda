//! The dashboard's chart of sign-ins and failed attempts per day, laid out on the server as
//! numbers for an inline SVG: no script draws it, and the page's CSP stays as strict as it is.
//!
//! It has to read without colour: sign-ins are solid bars, failed attempts hatched ones, every
//! bar that is not zero carries its number, and the template adds a table of the same counts.

use serde::Serialize;

use crate::models::dashboard::DayCount;

pub const WIDTH: i64 = 720;
pub const HEIGHT: i64 = 240;
const LEFT: i64 = 40;
const RIGHT: i64 = 10;
const TOP: i64 = 20;
const BOTTOM: i64 = 36;
/// Below the value labels' line: a label sits above its bar.
const PLOT_HEIGHT: i64 = HEIGHT - TOP - BOTTOM;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Bar {
    pub x: i64,
    pub y: i64,
    pub width: i64,
    pub height: i64,
    pub value: i64,
    /// Where the number above the bar goes (its middle, and its baseline).
    pub label_x: i64,
    pub label_y: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChartDay {
    /// `YYYY-MM-DD`, for `data-day` and the table.
    pub date: String,
    /// "2 Dec", as the axis and the tooltips say it.
    pub label: String,
    pub sign_ins: Bar,
    pub failed: Bar,
    /// The axis shows every 7th day's label (counting back from today), so they never crowd.
    pub tick: bool,
    pub tick_x: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GridLine {
    pub y: i64,
    pub value: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Chart {
    pub width: i64,
    pub height: i64,
    pub left: i64,
    pub right: i64,
    pub baseline: i64,
    pub axis_label_y: i64,
    /// The top of the scale: a round number at or above the busiest day.
    pub scale: i64,
    pub grid: Vec<GridLine>,
    pub days: Vec<ChartDay>,
    pub total_sign_ins: i64,
    pub total_failed: i64,
}

/// The smallest of 1, 2, 5, 10, 20, 50, … that is at least `n` (and at least 1).
fn round_scale(n: i64) -> i64 {
    let mut step = 1;
    loop {
        for factor in [1, 2, 5] {
            if step * factor >= n {
                return step * factor;
            }
        }
        step *= 10;
    }
}

pub fn chart(days: &[DayCount]) -> Chart {
    let busiest = days
        .iter()
        .map(|day| day.sign_ins.max(day.failed))
        .max()
        .unwrap_or(0);
    let scale = round_scale(busiest.max(1));
    let baseline = TOP + PLOT_HEIGHT;
    let slot = (WIDTH - LEFT - RIGHT) / i64::try_from(days.len().max(1)).unwrap_or(1);
    // Two bars and a gap in each day's slot.
    let bar_width = (slot - 4) / 2;
    let bar = |x: i64, value: i64| {
        // Rounded up, so one event among hundreds is still a visible sliver.
        let height = if value == 0 {
            0
        } else {
            ((value * PLOT_HEIGHT + scale - 1) / scale).max(1)
        };
        Bar {
            x,
            y: baseline - height,
            width: bar_width,
            height,
            value,
            label_x: x + bar_width / 2,
            label_y: baseline - height - 3,
        }
    };
    let last = days.len().saturating_sub(1);
    let chart_days = days
        .iter()
        .enumerate()
        .map(|(i, day)| {
            let x = LEFT + i64::try_from(i).unwrap_or(0) * slot;
            ChartDay {
                date: day.day.format("%Y-%m-%d").to_string(),
                label: day.day.format("%-d %b").to_string(),
                sign_ins: bar(x + 1, day.sign_ins),
                failed: bar(x + 1 + bar_width + 1, day.failed),
                tick: (last - i) % 7 == 0,
                tick_x: x + slot / 2,
            }
        })
        .collect();
    let marks = if scale >= 2 {
        vec![0, scale / 2, scale]
    } else {
        vec![0, scale]
    };
    let grid = marks
        .into_iter()
        .map(|value| GridLine {
            y: baseline - value * PLOT_HEIGHT / scale,
            value,
        })
        .collect();
    Chart {
        width: WIDTH,
        height: HEIGHT,
        left: LEFT,
        right: WIDTH - RIGHT,
        baseline,
        axis_label_y: baseline + 16,
        scale,
        grid,
        days: chart_days,
        total_sign_ins: days.iter().map(|day| day.sign_ins).sum(),
        total_failed: days.iter().map(|day| day.failed).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn days(counts: &[(i64, i64)]) -> Vec<DayCount> {
        let first = NaiveDate::from_ymd_opt(2026, 11, 3).unwrap();
        counts
            .iter()
            .enumerate()
            .map(|(i, (sign_ins, failed))| DayCount {
                day: first + chrono::Duration::days(i as i64),
                sign_ins: *sign_ins,
                failed: *failed,
            })
            .collect()
    }

    #[test]
    fn scales_are_round_numbers_at_or_above_the_busiest_day() {
        let cases = [(0, 1), (1, 1), (2, 2), (3, 5), (7, 10), (11, 20), (51, 100)];
        for (n, scale) in cases {
            assert_eq!(round_scale(n.max(1)), scale, "{n}");
        }
    }

    #[test]
    fn bars_are_as_tall_as_their_counts() {
        let mut counts = vec![(0, 0); 30];
        counts[29] = (10, 4);
        counts[0] = (5, 0);
        let chart = chart(&days(&counts));
        assert_eq!(chart.scale, 10);
        assert_eq!(chart.days.len(), 30);
        let today = &chart.days[29];
        assert_eq!(today.date, "2026-12-02");
        assert_eq!(today.label, "2 Dec");
        assert_eq!(today.sign_ins.height, PLOT_HEIGHT);
        assert_eq!(today.sign_ins.y + today.sign_ins.height, chart.baseline);
        // 4 of 10, rounded up to a whole pixel.
        assert_eq!(today.failed.height, (PLOT_HEIGHT * 4 + 9) / 10);
        assert_eq!(chart.days[0].sign_ins.height * 2, PLOT_HEIGHT);
        assert_eq!(chart.days[1].sign_ins.height, 0);
        // Bars never overlap, and stay inside the plot.
        for pair in chart.days.windows(2) {
            assert!(pair[0].failed.x + pair[0].failed.width <= pair[1].sign_ins.x);
        }
        assert!(today.failed.x + today.failed.width <= chart.right);
        assert_eq!((chart.total_sign_ins, chart.total_failed), (15, 4));
        // Today is labelled, and every 7th day before it.
        let ticks: Vec<_> = chart
            .days
            .iter()
            .filter(|d| d.tick)
            .map(|d| d.label.as_str())
            .collect();
        assert_eq!(ticks, ["4 Nov", "11 Nov", "18 Nov", "25 Nov", "2 Dec"]);
    }
}
