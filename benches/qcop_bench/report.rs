//! Summaries of samples and the Markdown tables the bench prints.

/// Order statistics of a set of durations, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Smallest.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

impl Summary {
    /// Summarises `samples` (nearest-rank percentiles); `None` if there are none.
    pub fn of(mut samples: Vec<u64>) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        Some(Summary {
            min: samples[0],
            p50: percentile(&samples, 50.0),
            p99: percentile(&samples, 99.0),
            max: samples[samples.len() - 1],
        })
    }
}

/// Nearest-rank percentile of sorted, non-empty samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of a few values (rounds of a throughput run).
pub fn median_f64(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `x / floor` as `1.23×`.
pub fn ratio(x: f64, floor: f64) -> String {
    if floor > 0.0 && x.is_finite() {
        format!("{:.2}×", x / floor)
    } else {
        "n/a".into()
    }
}

/// The six latency cells of a figure against its floor: figure median and p99, floor median
/// and p99 (each formatted with `unit`), then the two ratios.
pub fn latency_cells(q: &Summary, f: &Summary, unit: fn(u64) -> String) -> Vec<String> {
    vec![
        unit(q.p50),
        unit(q.p99),
        unit(f.p50),
        unit(f.p99),
        ratio(q.p50 as f64, f.p50 as f64),
        ratio(q.p99 as f64, f.p99 as f64),
    ]
}

/// Nanoseconds as microseconds with one decimal.
pub fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

/// Nanoseconds as milliseconds with two decimals.
pub fn ms(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1e6)
}

/// An integer with thin-space thousands groups (`1 234 567`).
pub fn grouped(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Bytes as KiB, or MiB from 1 MiB up.
pub fn bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.0} KiB", b as f64 / 1024.0)
    }
}

/// A Markdown table with a heading and notes.
pub struct Table {
    /// Heading (rendered as `###`).
    pub title: String,
    /// Paragraphs printed under the heading.
    pub notes: Vec<String>,
    /// Column names.
    pub header: Vec<&'static str>,
    /// Rows, each as long as the header.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table.
    pub fn new(title: impl Into<String>, header: Vec<&'static str>) -> Table {
        Table {
            title: title.into(),
            notes: Vec::new(),
            header,
            rows: Vec::new(),
        }
    }

    /// Renders the table as Markdown with aligned columns.
    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = String>| -> String {
            let mut s = String::from("|");
            for (cell, w) in cells.zip(&width) {
                let pad = w - cell.chars().count();
                s.push(' ');
                s.push_str(&cell);
                s.push_str(&" ".repeat(pad));
                s.push_str(" |");
            }
            s.push('\n');
            s
        };
        let mut out = format!("### {}\n\n", self.title);
        for note in &self.notes {
            out.push_str(note);
            out.push_str("\n\n");
        }
        out.push_str(&line(&mut self.header.iter().map(|h| h.to_string())));
        out.push_str(&line(&mut (0..cols).map(|i| "-".repeat(width[i]))));
        for row in &self.rows {
            out.push_str(&line(&mut row.iter().cloned()));
        }
        out
    }
}
