//! Backend health: active checks (`check`) and the rise/fall state of each backend (`state`).
//! A backend that is down leaves its group's Maglev table for new flows; its established flows
//! stay. Passive signals (connection attempts refused or unanswered) are counted by the kernel
//! programs and conntrack upkeep and judged by rollout gates.

pub mod check;
pub mod state;
