//! End-to-end tests of the `kappa-compactor` binary: what it prints.

mod cli;
