//! Tests of the prediction engine: behaviour by behaviour ([`unit`]) and
//! random runs against a scripted node ([`prop`], [`fake_node`]).

mod fake_node;
mod prop;
mod unit;
