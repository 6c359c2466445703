//! Reading a rendered Prometheus exposition back, for tests: the value of
//! one series, a sum over a name, the names exported. Compiled into the
//! integration tests' support and, through a `#[path]` module, into the
//! gateway's own unit tests; never into the gateway.

/// The value of the series `name{labels}` in `text`, with `labels` as
/// `[("transport", "websocket")]` in any order. `None` when absent.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    series(text)
        .find(|s| s.name == name && same_labels(&s.labels, labels))
        .map(|s| s.value)
}

/// The sum over every series called `name`.
pub fn sum(text: &str, name: &str) -> f64 {
    series(text)
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

/// The metric names in `text` (from its samples, with the `_bucket`,
/// `_sum` and `_count` of histograms folded into the base name when a
/// `# TYPE <base> histogram` line says so).
pub fn names(text: &str) -> std::collections::BTreeSet<String> {
    let histograms: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" histogram"))
        .collect();
    series(text)
        .map(|s| {
            for h in &histograms {
                if let Some(rest) = s.name.strip_prefix(h)
                    && ["_bucket", "_sum", "_count"].contains(&rest)
                {
                    return (*h).to_owned();
                }
            }
            s.name.to_owned()
        })
        .collect()
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series<'a> {
    pub name: &'a str,
    pub labels: Vec<(&'a str, String)>,
    pub value: f64,
}

/// Every sample line of `text`.
pub fn series(text: &str) -> impl Iterator<Item = Series<'_>> {
    text.lines().filter_map(parse_line)
}

fn parse_line(line: &str) -> Option<Series<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match head.find('{') {
        None => (head, Vec::new()),
        Some(i) => (&head[..i], parse_labels(head[i + 1..].strip_suffix('}')?)?),
    };
    Some(Series {
        name,
        labels,
        value,
    })
}

fn parse_labels(mut s: &str) -> Option<Vec<(&str, String)>> {
    let mut out = Vec::new();
    while !s.is_empty() {
        let (k, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        out.push((k.trim_start_matches(',').trim(), value));
        s = rest[end + 1..].trim_start_matches(',');
    }
    Some(out)
}

fn same_labels(have: &[(&str, String)], want: &[(&str, &str)]) -> bool {
    have.len() == want.len()
        && want
            .iter()
            .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
}
