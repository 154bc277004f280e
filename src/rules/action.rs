//! Actions: the changes a fired rule makes to the follower (tags, attributes, counters).
//!
//! [`Action`] is the applied, rendered form the engine records and the store persists;
//! [`Actions`] is a compiled rule's list, whose `set` values are still templates. Applying
//! one is a pure change to an in-memory `Follower`; writing it back is the engine's job.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::render::{Context, Template};
use crate::follower::Follower;

/// One change to a follower, with any template already rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    AddTag(String),
    RemoveTag(String),
    SetAttribute {
        key: String,
        value: String,
    },
    Increment {
        counter: String,
        by: i64,
    },
    /// An `[[autotag]]` put the tag on (`add`) or took it off, its condition having
    /// started or stopped holding.
    AutoTag {
        tag: String,
        add: bool,
    },
}

impl Action {
    pub fn apply(&self, follower: &mut Follower) {
        match self {
            Action::AddTag(tag) => {
                follower.tags.insert(tag.clone());
            }
            Action::RemoveTag(tag) => {
                follower.tags.remove(tag);
            }
            Action::SetAttribute { key, value } => {
                follower.attributes.insert(key.clone(), value.clone());
            }
            Action::Increment { counter, by } => {
                // Saturating: an operator's `incr = { x = -1 }` loop must not wrap around.
                let value = follower.counters.entry(counter.clone()).or_insert(0);
                *value = value.saturating_add(*by);
            }
            Action::AutoTag { tag, add: true } => {
                follower.tags.insert(tag.clone());
            }
            Action::AutoTag { tag, add: false } => {
                follower.tags.remove(tag);
            }
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::AddTag(tag) => write!(f, "add tag {tag}"),
            Action::RemoveTag(tag) => write!(f, "remove tag {tag}"),
            Action::SetAttribute { key, value } => write!(f, "set {key} = {value}"),
            Action::Increment { counter, by } if *by < 0 => {
                write!(f, "counter {counter} -= {}", by.unsigned_abs())
            }
            Action::Increment { counter, by } => write!(f, "counter {counter} += {by}"),
            Action::AutoTag { tag, add: true } => write!(f, "autotag +{tag}"),
            Action::AutoTag { tag, add: false } => write!(f, "autotag -{tag}"),
        }
    }
}

/// A compiled rule's actions, applied in this fixed order: `remove_tags`, `add_tags`,
/// `set`, `incr`. Each step sees the follower as the previous steps left it; the `set`
/// values of one rule are all rendered before any of them is stored, so their order (TOML
/// tables have none) never matters.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Actions {
    pub remove_tags: Vec<String>,
    pub add_tags: Vec<String>,
    pub set: Vec<(String, Template)>,
    pub incr: Vec<(String, i64)>,
}

impl Actions {
    /// Applies every action to `follower` and appends it, rendered, to `applied`.
    pub fn apply(&self, ctx: &Context<'_>, follower: &mut Follower, applied: &mut Vec<Action>) {
        let start = applied.len();
        applied.extend(self.remove_tags.iter().cloned().map(Action::RemoveTag));
        applied.extend(self.add_tags.iter().cloned().map(Action::AddTag));
        for action in &applied[start..] {
            action.apply(follower);
        }
        let start = applied.len();
        applied.extend(self.set.iter().map(|(key, value)| Action::SetAttribute {
            key: key.clone(),
            value: value.render(ctx, follower),
        }));
        applied.extend(self.incr.iter().map(|(counter, by)| Action::Increment {
            counter: counter.clone(),
            by: *by,
        }));
        for action in &applied[start..] {
            action.apply(follower);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_and_display() {
        let s = |v: &str| v.to_string();
        let cases = [
            ("add tag", Action::AddTag(s("vip")), "add tag vip"),
            (
                "remove tag",
                Action::RemoveTag(s("cold")),
                "remove tag cold",
            ),
            (
                "set attribute",
                Action::SetAttribute {
                    key: s("city"),
                    value: s("上海"),
                },
                "set city = 上海",
            ),
            (
                "increment",
                Action::Increment {
                    counter: s("checkin"),
                    by: 1,
                },
                "counter checkin += 1",
            ),
            (
                "decrement",
                Action::Increment {
                    counter: s("stock"),
                    by: -2,
                },
                "counter stock -= 2",
            ),
        ];
        for (name, action, shown) in &cases {
            assert_eq!(action.to_string(), *shown, "{name}");
        }

        let mut f = Follower::new("o");
        f.tags.insert(s("cold"));
        f.attributes.insert(s("city"), s("北京"));
        f.counters.insert(s("big"), i64::MAX - 1);
        for (_, action, _) in &cases {
            action.apply(&mut f);
        }
        Action::Increment {
            counter: s("big"),
            by: 5,
        }
        .apply(&mut f);
        assert!(f.has_tag("vip") && !f.has_tag("cold"));
        assert_eq!(f.attributes["city"], "上海", "set overwrites");
        assert_eq!(f.counters["checkin"], 1);
        assert_eq!(f.counters["stock"], -2);
        assert_eq!(f.counters["big"], i64::MAX, "increments saturate");
    }

    #[test]
    fn compiled_actions_apply_in_order() {
        let s = |v: &str| v.to_string();
        let actions = Actions {
            remove_tags: vec![s("new")],
            add_tags: vec![s("new"), s("regular")],
            // Rendered after the tag steps, before the counter step.
            set: vec![(
                s("seen"),
                Template::parse("{tags}/{counter.visits}").unwrap(),
            )],
            incr: vec![(s("visits"), 1)],
        };
        let mut f = Follower::new("o");
        f.tags.insert(s("new"));
        let mut applied = Vec::new();
        actions.apply(&Context::default(), &mut f, &mut applied);
        let shown: Vec<String> = applied.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "remove tag new",
                "add tag new",
                "add tag regular",
                "set seen = new, regular/0",
                "counter visits += 1"
            ]
        );
        assert!(f.has_tag("new"), "add_tags run after remove_tags");
        assert_eq!(f.counters["visits"], 1);
    }
}
