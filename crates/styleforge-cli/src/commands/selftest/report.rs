//! What a fault campaign found, and its printed table.

use super::phases::{At, Phase};
use super::verify::Check;

/// One kill carried out.
#[derive(Debug, Clone)]
pub struct Kill {
    /// The phase it aimed at.
    pub phase: Phase,
    /// The occurrence it aimed at.
    pub target: At,
    /// Where the run was when it died (read from all it wrote).
    pub died_at: At,
    /// Made again because an earlier kill at the same target landed outside its phase.
    pub retry: bool,
}

/// One sitting stopped by a full disk.
#[derive(Debug, Clone)]
pub struct DiskFull {
    /// What could not be written.
    pub what: &'static str,
    /// The error the run printed (its cause chain on one line).
    pub message: String,
    /// What was wrong (empty: stopped cleanly).
    pub failures: Vec<String>,
}

/// What a campaign found.
#[derive(Debug)]
pub struct Report {
    /// Every kill made, in order.
    pub kills: Vec<Kill>,
    /// Kills planned that could not be made: the run never entered their target again.
    pub skipped: Vec<(Phase, At)>,
    /// The full-disk sittings.
    pub disk_full: Vec<DiskFull>,
    /// The final comparison with the reference run.
    pub checks: Vec<Check>,
    /// Processes started for the faulted run.
    pub sittings: usize,
    /// Checkpoints opened by the checks after each sitting.
    pub checkpoint_loads: usize,
    /// The reference run's time in each phase: occurrences and seconds.
    pub reference_phases: Vec<(Phase, usize, f64)>,
    /// Wall-clock seconds of the reference run.
    pub reference_s: f64,
    /// Wall-clock seconds of the faulted run, all sittings and checks.
    pub faulted_s: f64,
    /// The kills asked for.
    pub kills_asked: usize,
}

impl Report {
    /// Whether everything held: every planned kill was made, every phase aimed at had a
    /// kill land in it, every full disk stopped the run cleanly, and the end matched the
    /// reference.
    pub fn passed(&self) -> bool {
        self.skipped.is_empty()
            && self.missed_phases().is_empty()
            && self.disk_full.iter().all(|d| d.failures.is_empty())
            && self.checks.iter().all(Check::passed)
    }

    /// Phases aimed at in which no kill landed.
    fn missed_phases(&self) -> Vec<Phase> {
        let mut aimed: Vec<Phase> = self.kills.iter().map(|k| k.phase).collect();
        aimed.sort();
        aimed.dedup();
        aimed
            .into_iter()
            .filter(|p| !self.kills.iter().any(|k| k.died_at.phase() == Some(*p)))
            .collect()
    }

    /// The report as text: each kill, kills per phase, the full disks, the checks, the
    /// outcome.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (i, k) in self.kills.iter().enumerate() {
            s.push_str(&format!(
                "kill {:>2}: aimed at {}{}, died in {}\n",
                i + 1,
                k.target,
                if k.retry { " (again)" } else { "" },
                k.died_at
            ));
        }
        s.push_str(&format!(
            "\n{:<22} {:>8} {:>13} {:>19}\n",
            "phase", "targeted", "died in phase", "reference: n, time"
        ));
        for phase in Phase::ALL {
            let targeted = self.kills.iter().filter(|k| k.phase == phase).count();
            let died = self
                .kills
                .iter()
                .filter(|k| k.died_at.phase() == Some(phase))
                .count();
            let (n, secs) = self
                .reference_phases
                .iter()
                .find(|(p, _, _)| *p == phase)
                .map_or((0, 0.0), |(_, n, t)| (*n, *t));
            s.push_str(&format!(
                "{:<22} {targeted:>8} {died:>13} {:>19}\n",
                phase.label(),
                format!("{n}, {secs:.1} s")
            ));
        }
        let between = self
            .kills
            .iter()
            .filter(|k| k.died_at.phase().is_none())
            .count();
        s.push_str(&format!(
            "{:<22} {:>8} {between:>13}\n",
            "between phases", "-"
        ));
        s.push_str(&format!(
            "{:<22} {:>8} {:>13}\n\n",
            "total",
            self.kills.len(),
            self.kills.len()
        ));
        for (phase, target) in &self.skipped {
            s.push_str(&format!(
                "FAILED: planned kill not made: {} at {target} (the run did not enter it again)\n",
                phase.label()
            ));
        }
        for p in self.missed_phases() {
            s.push_str(&format!("FAILED: no kill landed in {}\n", p.label()));
        }
        for d in &self.disk_full {
            let verdict = if d.failures.is_empty() {
                "ok"
            } else {
                "FAILED"
            };
            s.push_str(&format!(
                "disk full at the {}: {verdict}: {}\n",
                d.what, d.message
            ));
            for f in &d.failures {
                s.push_str(&format!("  - {f}\n"));
            }
        }
        s.push_str(&format!(
            "checkpoints opened and loaded after the sittings: {}\n",
            self.checkpoint_loads
        ));
        for c in &self.checks {
            let verdict = if c.passed() { "ok" } else { "FAILED" };
            s.push_str(&format!("{:<18} {verdict}: {}\n", c.name, c.summary));
            for f in &c.failures {
                s.push_str(&format!("  - {f}\n"));
            }
        }
        let retries = self.kills.iter().filter(|k| k.retry).count();
        s.push_str(&format!(
            "{} kills ({} planned, {retries} made again after landing outside their phase), \
             {} full disks, {} sittings; reference run {:.0} s, faulted run {:.0} s\n",
            self.kills.len(),
            self.kills_asked,
            self.disk_full.len(),
            self.sittings,
            self.reference_s,
            self.faulted_s
        ));
        s.push_str(if self.passed() {
            "outcome: PASSED (nothing lost, nothing half-written, bit-identical end)\n"
        } else {
            "outcome: FAILED\n"
        });
        s
    }
}
