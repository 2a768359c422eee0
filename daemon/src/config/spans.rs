//! Where each part of a converted config came from in the file, so a rule the model finds
//! broken (a `Place` in the state) is reported at its line and column.

use std::{ops::Range, path::Path};

use super::Location;
use crate::model::{
    GroupField, HealthField, PinField, Place, RolloutField, ServiceField, TimeoutField,
};

/// Turns byte offsets of the text into line and column.
pub(super) struct Locator<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
}

impl Locator<'_> {
    /// The location of the start of `span`.
    pub(super) fn at(&self, span: &Range<usize>) -> Location {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        Location {
            file: self.file.to_owned(),
            line,
            column,
        }
    }

    /// How many characters of its first line `span` covers (at least 1).
    pub(super) fn width(&self, span: &Range<usize>) -> usize {
        let start = span.start.min(self.text.len());
        let end = span.end.clamp(start, self.text.len());
        let covered = self.text.get(start..end).unwrap_or("");
        covered
            .split('\n')
            .next()
            .map_or(1, |l| l.trim_end().chars().count().max(1))
    }
}

/// Spans of the fields a table writes, by field.
pub(super) type Fields<F> = Vec<(F, Range<usize>)>;

/// The span of a sub-table and of its fields.
pub(super) type Table<F> = Option<(Range<usize>, Fields<F>)>;

/// The spans of `[node]`.
#[derive(Debug, Default)]
pub(super) struct NodeSpans {
    pub(super) table: Range<usize>,
    pub(super) interfaces: Vec<Range<usize>>,
    /// The value of each `[node.hooks]` entry, in interface-name order (as `NodeConfig::hooks`).
    pub(super) hooks: Vec<Range<usize>>,
    pub(super) conntrack_max: Option<Range<usize>>,
    pub(super) conntrack_new_max: Option<Range<usize>>,
    pub(super) timeouts_table: Option<Range<usize>>,
    pub(super) timeouts: Vec<(TimeoutField, Range<usize>)>,
}

/// The spans of a `[[service.group]]`.
#[derive(Debug, Default)]
pub(super) struct GroupSpans {
    pub(super) table: Range<usize>,
    pub(super) name: Range<usize>,
    pub(super) weight: Range<usize>,
    pub(super) backends: Vec<Range<usize>>,
}

/// The spans of a `[[service]]`.
#[derive(Debug, Default)]
pub(super) struct ServiceSpans {
    pub(super) table: Range<usize>,
    pub(super) name: Range<usize>,
    pub(super) vip: Range<usize>,
    pub(super) port: Range<usize>,
    pub(super) groups: Vec<GroupSpans>,
    pub(super) pins: Vec<(Range<usize>, Range<usize>)>,
    pub(super) health: Table<HealthField>,
    pub(super) rollout: Table<RolloutField>,
}

/// Every span a converted config was made from.
#[derive(Debug, Default)]
pub(super) struct Spans {
    pub(super) node: NodeSpans,
    pub(super) services: Vec<ServiceSpans>,
}

/// The span of `field` in `fields`, else `table`.
fn field<F: PartialEq + Copy>(
    table: &Range<usize>,
    fields: &[(F, Range<usize>)],
    f: F,
) -> Range<usize> {
    fields
        .iter()
        .find(|(x, _)| *x == f)
        .map_or_else(|| table.clone(), |(_, span)| span.clone())
}

impl Spans {
    /// The span of `place`; where the file does not write that part (a default), the span of
    /// the nearest part that holds it.
    pub(super) fn of(&self, place: &Place) -> Range<usize> {
        let service = |i: usize| self.services.get(i);
        let or_file = |span: Option<Range<usize>>| span.unwrap_or(0..0);
        match *place {
            Place::Service { service: i, field } => or_file(service(i).map(|s| match field {
                ServiceField::Table => s.table.clone(),
                ServiceField::Name => s.name.clone(),
                ServiceField::Vip => s.vip.clone(),
                ServiceField::Port => s.port.clone(),
            })),
            Place::Group {
                service: i,
                group: j,
                field,
            } => or_file(service(i).map(|s| {
                s.groups.get(j).map_or_else(
                    || s.table.clone(),
                    |g| match field {
                        GroupField::Table => g.table.clone(),
                        GroupField::Name => g.name.clone(),
                        GroupField::Weight => g.weight.clone(),
                    },
                )
            })),
            Place::Backend {
                service: i,
                group: j,
                backend: k,
            } => or_file(service(i).and_then(|s| s.groups.get(j)).map(|g| {
                g.backends
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| g.table.clone())
            })),
            Place::Pin {
                service: i,
                pin: p,
                field,
            } => or_file(service(i).map(|s| {
                s.pins.get(p).map_or_else(
                    || s.table.clone(),
                    |(prefix, group)| match field {
                        PinField::Prefix => prefix.clone(),
                        PinField::Group => group.clone(),
                    },
                )
            })),
            Place::Health {
                service: i,
                field: f,
            } => or_file(service(i).map(|s| {
                s.health.as_ref().map_or_else(
                    || s.table.clone(),
                    |(table, fields)| field(table, fields, f),
                )
            })),
            Place::Rollout {
                service: i,
                field: f,
            } => or_file(service(i).map(|s| {
                s.rollout.as_ref().map_or_else(
                    || s.table.clone(),
                    |(table, fields)| field(table, fields, f),
                )
            })),
            Place::Interface(k) => self
                .node
                .interfaces
                .get(k)
                .cloned()
                .unwrap_or_else(|| self.node.table.clone()),
            Place::Hook(k) => self
                .node
                .hooks
                .get(k)
                .cloned()
                .unwrap_or_else(|| self.node.table.clone()),
            Place::ConntrackMax => self
                .node
                .conntrack_max
                .clone()
                .unwrap_or_else(|| self.node.table.clone()),
            Place::ConntrackNewMax => self
                .node
                .conntrack_new_max
                .clone()
                .unwrap_or_else(|| self.node.table.clone()),
            Place::Timeout(f) => {
                let table = self
                    .node
                    .timeouts_table
                    .clone()
                    .unwrap_or_else(|| self.node.table.clone());
                field(&table, &self.node.timeouts, f)
            }
        }
    }
}
