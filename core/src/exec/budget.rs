//! Budgets: what a run may spend (`config.budget`, or the run's own), what it
//! has spent, and the check before each provider attempt.
//!
//! The driver reports what each answer cost ([`Execution::charge`], with the
//! answer's event) and what a step's attempt can cost at most
//! ([`Execution::set_rates`]: the price table's rates for the step's model and
//! its longest answer). Before an attempt starts, the executor adds what was
//! spent, the worst case of the attempts in flight and the worst case of this
//! one; when that would exceed the budget, the run pauses (reason `budget: …`)
//! instead of starting it. Raising the budget ([`Execution::set_budget`]) and
//! resuming goes on from there. What was spent is part of the checkpoint, so
//! a restored run does not spend its budget twice.

use super::{Action, ChildControl, ExecError, Execution, Slot};
use crate::model::Budget;
use crate::state::ExecutionState;
use serde::{Deserialize, Serialize};

/// The longest answer assumed when the driver gave no rate for a step (the
/// server's default `max_tokens`).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Money and tokens (in and out).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spend {
    #[serde(default)]
    pub usd: f64,
    #[serde(default)]
    pub tokens: u64,
}

impl Spend {
    pub fn is_zero(&self) -> bool {
        self.usd == 0.0 && self.tokens == 0
    }

    fn plus(self, o: Spend) -> Spend {
        Spend {
            usd: self.usd + o.usd,
            tokens: self.tokens.saturating_add(o.tokens),
        }
    }

    /// This less `o` (never below zero).
    fn minus(self, o: Spend) -> Spend {
        Spend {
            usd: (self.usd - o.usd).max(0.0),
            tokens: self.tokens.saturating_sub(o.tokens),
        }
    }

    /// These amounts as a budget with the limits `budget` sets.
    fn as_limits_of(self, budget: Budget) -> Budget {
        Budget {
            usd: budget.usd.map(|_| self.usd),
            tokens: budget.tokens.map(|_| self.tokens),
        }
    }
}

/// What an attempt of one step can cost at most, from the driver's price table.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rate {
    /// USD per input token and per output token (the dearest provider the
    /// attempt may reach); `None` when the model has no price.
    pub usd_per_token: Option<(f64, f64)>,
    /// The longest answer, in tokens.
    pub max_tokens: u32,
    /// Tokens sent with every prompt (the system prompt), estimated.
    pub fixed_tokens: u64,
}

/// Tokens a prompt of `bytes` bytes can take at most, estimated: one per two
/// bytes, rounded up (tokenizers average three to four characters a token).
pub fn prompt_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(2)
}

impl Execution {
    /// The run's budget: its own where set, else `config.budget`.
    pub fn budget(&self) -> Budget {
        self.plan
            .workflow
            .config
            .budget
            .unwrap_or_default()
            .or(self.budget)
    }

    /// Give the run its own budget: each limit set replaces the one before
    /// (the file's, or one given earlier).
    pub fn set_budget(&mut self, budget: Budget) {
        self.budget = self.budget.or(budget);
    }

    /// The limits given with [`Execution::set_budget`] (not the file's).
    pub fn own_budget(&self) -> Budget {
        self.budget
    }

    /// What the run has spent (answers reported with [`Execution::charge`]).
    pub fn spent(&self) -> Spend {
        self.spent
    }

    /// The worst case of each step's attempts, by step (the driver's price
    /// table); a step without one is priced unknown with [`DEFAULT_MAX_TOKENS`].
    pub fn set_rates(&mut self, rate: &dyn Fn(&crate::model::Step) -> Rate) {
        self.rates = self.plan.workflow.steps.iter().map(rate).collect();
    }

    /// Record what the answer of `(key, attempt)` cost; call it before feeding
    /// the answer's event, for answers that failed too (tokens were used).
    pub fn charge(&mut self, key: &str, attempt: u32, spend: Spend) {
        let i = self.plan.index_of(key);
        self.reserved
            .retain(|&(s, a, _)| Some(s) != i || a != attempt);
        self.spent = self.spent.plus(spend);
    }

    /// The worst case of an attempt of step `i` with `prompt`.
    fn worst_case(&self, i: usize, prompt: &str) -> (Spend, Option<String>) {
        let step = &self.plan.workflow.steps[i];
        let rate = self.rates.get(i).copied().unwrap_or(Rate {
            usd_per_token: None,
            max_tokens: step.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            fixed_tokens: 0,
        });
        let tokens_in = prompt_tokens(prompt.len())
            + rate.fixed_tokens
            + step.system.as_deref().map_or(0, |s| prompt_tokens(s.len()));
        let tokens_out = u64::from(rate.max_tokens);
        let (usd, unpriced) = match rate.usd_per_token {
            Some((p_in, p_out)) => (tokens_in as f64 * p_in + tokens_out as f64 * p_out, None),
            None => (0.0, Some(step.key.clone())),
        };
        let spend = Spend {
            usd,
            tokens: tokens_in + tokens_out,
        };
        (spend, unpriced)
    }

    /// May an attempt of step `i` with `prompt` start within the budget? If
    /// so, its worst case is held until its answer is charged. If it fits only
    /// once attempts in flight settle, it waits for them (`false`, and the
    /// scheduler stops for now); if it does not fit at all, the run pauses
    /// with the reason (`false`).
    pub(super) fn within_budget(
        &mut self,
        i: usize,
        prompt: &str,
        now: u64,
    ) -> Result<bool, ExecError> {
        let budget = self.budget();
        if budget.is_unlimited() {
            return Ok(true);
        }
        let (worst, unpriced) = self.worst_case(i, prompt);
        // Attempts and children in flight may still spend what they hold.
        let held = self.reserved_in_flight().plus(self.held_by_children(true));
        let alone = self.spent.plus(worst);
        let total = alone.plus(held);
        let over = |t: Spend| {
            budget.usd.is_some_and(|l| t.usd > l) || budget.tokens.is_some_and(|l| t.tokens > l)
        };
        let key = &self.plan.workflow.steps[i].key;
        let why = match (budget.usd, budget.tokens, unpriced) {
            (Some(_), _, Some(_)) => Some(format!(
                "budget: step `{key}` uses a model without a price, so its cost cannot be bounded; add its price to the agents file's [prices] or set only a token budget"
            )),
            (Some(limit), _, None) if alone.usd > limit => Some(format!(
                "budget: the next attempt of `{key}` may cost up to ${:.6}; with ${:.6} spent that would pass the budget of ${limit:.6}; raise it to continue",
                worst.usd, self.spent.usd
            )),
            (_, Some(limit), _) if alone.tokens > limit => Some(format!(
                "budget: the next attempt of `{key}` may use up to {} tokens; with {} used that would pass the budget of {limit} tokens; raise it to continue",
                worst.tokens, self.spent.tokens
            )),
            _ => None,
        };
        if let Some(reason) = why {
            self.pause_for_budget(now, reason)?;
            return Ok(false);
        }
        if over(total) {
            // It fits once what is in flight has answered.
            self.budget_wait = true;
            return Ok(false);
        }
        let attempt = self.steps[i].attempt.saturating_add(1);
        self.reserved.push((i, attempt, worst));
        Ok(true)
    }

    /// What the attempts in flight hold (their worst case); those no longer
    /// in flight are let go.
    fn reserved_in_flight(&mut self) -> Spend {
        let live: Vec<(usize, u32, Spend)> = self
            .reserved
            .iter()
            .copied()
            .filter(|&(s, a, _)| self.attempt_in_flight(s, a))
            .collect();
        self.reserved = live;
        self.reserved
            .iter()
            .fold(Spend::default(), |acc, r| acc.plus(r.2))
    }

    /// What the children in flight hold of the budget (`starved_too`: also
    /// those that used up their allowance and wait for more).
    fn held_by_children(&self, starved_too: bool) -> Spend {
        self.child_links()
            .filter(|(_, _, l)| starved_too || l.starved.is_none())
            .filter_map(|(_, _, l)| l.held)
            .fold(Spend::default(), Spend::plus)
    }

    /// What is left of `budget` with `held` still held (never below zero).
    fn left(&self, budget: Budget, held: Spend) -> Spend {
        Spend {
            usd: budget
                .usd
                .map_or(0.0, |l| (l - self.spent.usd - held.usd).max(0.0)),
            tokens: budget.tokens.map_or(0, |l| {
                l.saturating_sub(self.spent.tokens.saturating_add(held.tokens))
            }),
        }
    }

    /// What a child of step `i` may spend, held for it until it ends: what is
    /// left of the run's budget. `Ok(Some(None))`: the run has no budget;
    /// `Ok(None)`: it cannot start now (the run paused, or it waits for what
    /// is in flight to settle).
    pub(super) fn child_allowance(
        &mut self,
        i: usize,
        now: u64,
    ) -> Result<Option<Option<(Budget, Spend)>>, ExecError> {
        let budget = self.budget();
        if budget.is_unlimited() {
            return Ok(Some(None));
        }
        let held = self.reserved_in_flight().plus(self.held_by_children(true));
        let left = self.left(budget, held);
        let nothing_left =
            budget.usd.is_some() && left.usd <= 0.0 || budget.tokens.is_some() && left.tokens == 0;
        if nothing_left {
            if held.is_zero() {
                let key = &self.plan.workflow.steps[i].key;
                let reason = format!(
                    "budget: nothing is left for the sub-workflow of `{key}` ({}); raise it to continue",
                    self.spent_of(budget)
                );
                self.pause_for_budget(now, reason)?;
            } else {
                self.budget_wait = true;
            }
            return Ok(None);
        }
        Ok(Some(Some((left.as_limits_of(budget), left))))
    }

    /// "$X of $Y spent, N of M tokens used", for the limits set.
    fn spent_of(&self, budget: Budget) -> String {
        let mut parts = Vec::new();
        if let Some(l) = budget.usd {
            parts.push(format!("${:.6} of ${l:.6} spent", self.spent.usd));
        }
        if let Some(l) = budget.tokens {
            parts.push(format!("{} of {l} tokens used", self.spent.tokens));
        }
        parts.join(", ")
    }

    /// What a child spent (with its own children), reported when it ended.
    pub(super) fn charge_child(&mut self, spent: Spend) {
        self.spent = self.spent.plus(spent);
    }

    /// Children that used up what they were given (`ChildOutOfBudget`) get
    /// more when more is left: what the run has left besides every other
    /// hold, as a `BudgetChild` and a resume. When nothing more is left and
    /// nothing else in flight could give any back, the run pauses for its
    /// budget with the child's reason.
    pub(super) fn feed_starved_children(&mut self, now: u64) -> Result<(), ExecError> {
        let budget = self.budget();
        if budget.is_unlimited() || self.state != ExecutionState::Running {
            return Ok(());
        }
        let starved: Vec<(Slot, u32, Spend, String)> = self
            .child_links()
            .filter_map(|(slot, attempt, l)| {
                let why = l.starved.clone()?;
                Some((slot, attempt, l.held.unwrap_or_default(), why))
            })
            .collect();
        for (slot, attempt, own, why) in starved {
            let reserved = self.reserved_in_flight();
            let others = self.held_by_children(true).minus(own).plus(reserved);
            let left = self.left(budget, others);
            let more = budget.usd.is_some() && left.usd > own.usd
                || budget.tokens.is_some() && left.tokens > own.tokens;
            let key = self.plan.workflow.steps[slot.step()].key.clone();
            if !more {
                // Only attempts in flight and children still running can give
                // any back (a starved child spends nothing more until it gets
                // more).
                if self.held_by_children(false).plus(reserved).is_zero() {
                    let reason = format!(
                        "budget: the sub-workflow of `{key}` used what this run had left for it ({why}); raise this run's budget to continue"
                    );
                    self.pause_for_budget(now, reason)?;
                    return Ok(());
                }
                // Others in flight may give some back: it waits for them.
                continue;
            }
            if let Some(link) = self.link_mut(slot) {
                link.held = Some(left);
                link.starved = None;
            }
            self.mark_dirty(slot);
            self.actions.push(Action::BudgetChild {
                key: key.clone(),
                attempt,
                budget: left.as_limits_of(budget),
            });
            self.actions.push(Action::ControlChild {
                key,
                attempt,
                control: ChildControl::Resume,
            });
        }
        Ok(())
    }

    /// Is attempt `attempt` of step `i` (or of one of its items) in flight?
    fn attempt_in_flight(&self, i: usize, attempt: u32) -> bool {
        let key = &self.plan.workflow.steps[i].key;
        self.attempt_slot(key, attempt, self.plan.workflow.steps[i].kind)
            .is_ok()
    }

    pub(super) fn pause_for_budget(&mut self, now: u64, reason: String) -> Result<(), ExecError> {
        if self.state != ExecutionState::Running {
            return Ok(());
        }
        self.accumulate_active(now);
        self.set_state(ExecutionState::Paused, now, Some(reason.clone()))?;
        self.reason = Some(reason);
        self.pause_settled = false;
        Ok(())
    }
}
