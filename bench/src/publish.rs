//! `ax-bench publish`: copy the generated tables (`target/bench/NAME.md`) into
//! RELIABILITY.md between `<!-- bench:NAME:begin -->` and `<!-- bench:NAME:end -->`,
//! so the published figures are the ones a run printed, never typed by hand.

use crate::util::{self, Args};
use anyhow::{Context as _, Result, bail};

/// Replace the text between the markers of `name` with `body`.
pub fn splice(doc: &str, name: &str, body: &str) -> Result<String> {
    let begin = format!("<!-- bench:{name}:begin -->");
    let end = format!("<!-- bench:{name}:end -->");
    let (Some(b), Some(e)) = (doc.find(&begin), doc.find(&end)) else {
        bail!("no {begin} … {end} block");
    };
    if e < b {
        bail!("{end} comes before {begin}");
    }
    Ok(format!(
        "{}{begin}\n{}\n{}",
        &doc[..b],
        body.trim_end(),
        &doc[e..]
    ))
}

pub fn main(args: &Args) -> Result<()> {
    let out = util::out_dir(args)?;
    let file = args.path("file", util::repo_root().join("RELIABILITY.md"));
    let mut doc = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let mut done = Vec::new();
    let names: Vec<String> = match args.get("names") {
        Some(n) => n.split(',').map(str::to_owned).collect(),
        None => ["soak", "soak-faults", "faults", "load", "growth"]
            .map(str::to_owned)
            .to_vec(),
    };
    for name in &names {
        let md = out.join(format!("{name}.md"));
        if !md.is_file() || !doc.contains(&format!("<!-- bench:{name}:begin -->")) {
            continue;
        }
        // Only full runs are published.
        let quick = std::fs::read_to_string(out.join(format!("{name}.json")))
            .ok()
            .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
            .is_none_or(|v| v["quick"] != false);
        if quick {
            eprintln!("{name}: the last run was a --quick run (or has no JSON): not published");
            continue;
        }
        let body = std::fs::read_to_string(&md)?;
        // The generated heading is the document's own.
        let body: String = body
            .lines()
            .skip_while(|l| l.starts_with('#') || l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        doc = splice(&doc, name, &body)?;
        done.push(name.as_str());
    }
    std::fs::write(&file, doc)?;
    eprintln!(
        "{}: updated {}",
        file.display(),
        if done.is_empty() {
            "nothing (no results in target/bench yet)".to_owned()
        } else {
            done.join(", ")
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_between_markers() {
        let doc = "a\n<!-- bench:x:begin -->\nold\n<!-- bench:x:end -->\nb\n";
        let out = splice(doc, "x", "new\n").unwrap();
        assert_eq!(
            out,
            "a\n<!-- bench:x:begin -->\nnew\n<!-- bench:x:end -->\nb\n"
        );
        assert!(splice(doc, "y", "z").is_err());
    }
}
