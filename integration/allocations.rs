//! Heap allocations on the router's path, counted (issue 12: none per
//! series). A test binary of its own, with one test, because the counting
//! allocator sees every thread of the process.

use std::alloc::System;
use std::collections::HashMap;

use prost::Message;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use streamroute::produce::generate;
use streamroute::relabel::RelabelConfig;
use streamroute::remote_write::{compress, decompress_reusing, fast, Encoding, Limits};
use streamroute::router::config::RouteConfig;
use streamroute::router::route::{route_fast, FastRouting, Output, Route, RouteStats};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The five rules of scripts/bench-vs-vmagent.sh: a drop, a `replace` with
/// capture groups, a `labeldrop`, a static label, a two-source `replace`.
const FIVE_RULES: &str = include_str!("../benches/five_rules.yml");

/// A rule of every action that sets labels, and of every action that
/// keeps or drops, written so that they keep every series of the
/// generator's: each must relabel without allocating per series.
const EVERY_ACTION: &str = r#"
- {action: labelmap, regex: "(app|node)", replacement: "k8s_$1"}
- {action: lowercase, source_labels: [cluster], target_label: cluster_lower}
- {action: uppercase, source_labels: [cluster], target_label: cluster_upper}
- {action: hashmod, source_labels: [instance], modulus: 16, target_label: shard}
- {action: replace, source_labels: [job], regex: "job-(.*)", target_label: "job_$1", replacement: "${1}x"}
- {action: replace, source_labels: [namespace, pod], separator: "/", target_label: workload}
- {action: keep, source_labels: [cluster], regex: "eu-.*"}
- {action: drop, source_labels: [cluster], regex: "us-.*"}
- {action: keepequal, source_labels: [cluster_lower], target_label: cluster}
- {action: dropequal, source_labels: [app], target_label: node}
- {action: labeldrop, regex: container}
- {action: labelkeep, regex: ".+"}
"#;

const SERIES: usize = 2_000;

fn route(name: &str) -> Route {
    route_with(name, FIVE_RULES)
}

fn route_with(name: &str, rules: &str) -> Route {
    let relabel_configs: Vec<RelabelConfig> = serde_yaml::from_str(rules).expect("rules");
    Route::compile(
        &RouteConfig {
            relabel_configs,
            ..RouteConfig::new(name, name, 64)
        },
        streamroute::remote_write::NameValidation::default(),
    )
    .expect("route")
}

/// Decompresses, reads and routes `body` into `batches` (whose buffers are
/// kept from request to request, as the router's batches are); returns
/// the series written.
fn route_body(
    body: &[u8],
    routes: &[Route],
    routing: &mut FastRouting,
    batches: &mut HashMap<(usize, u32), Output>,
) -> usize {
    let raw = decompress_reusing(body, Encoding::Snappy, 64 << 20).expect("decompress");
    let request = fast::parse(&raw, &Limits::default()).expect("the fast reader reads it");
    let mut stats = vec![RouteStats::default(); routes.len()];
    let mut series = 0;
    route_fast(
        &request,
        routes,
        &[8; 2],
        routing,
        &mut stats,
        |r, p, _, entry| {
            entry.append_to(batches.entry((r, p)).or_default());
            series += 1;
        },
    );
    series
}

#[test]
fn routing_a_request_allocates_per_request_not_per_series() {
    let request = generate::payload(0, SERIES as u64, 0, 1_700_000_000_000);
    let body = compress(&request.encode_to_vec(), Encoding::Snappy).expect("snappy");
    // The bound per route: a few dozen per request (the label vector, the
    // relabel buffers, one capture position set per regex, the spare
    // strings of the labels the rules set, made anew per request, some
    // grown to a longer value), against ~10 per series before (each label a
    // rule sets, the task label): 20,000 here. The rules of every action set
    // seven labels per series, so their spare strings are more (35,503
    // allocations before lowercase, uppercase, labelmap and templated
    // targets wrote into kept buffers).
    // With the relabel cache (router.relabel_cache_bytes), series seen
    // before take nothing from it but a lookup; new series are put in its
    // arena, which grows by doubling: a few allocations per request at
    // most, none once it has grown (see the third case).
    let new_series = generate::payload(SERIES as u64, SERIES as u64, 0, 1_700_000_000_000);
    let other = compress(&new_series.encode_to_vec(), Encoding::Snappy).expect("snappy");
    let third_series = generate::payload(2 * SERIES as u64, SERIES as u64, 0, 1_700_000_000_000);
    let third = compress(&third_series.encode_to_vec(), Encoding::Snappy).expect("snappy");
    for (routes, per_route) in [
        (vec![route("one")], 32),
        (vec![route("a"), route("b")], 32),
        (vec![route_with("every_action", EVERY_ACTION)], 64),
    ] {
        for (case, budget, warm, measured) in [
            ("no cache", 0, vec![&body], &body),
            ("cache, series seen", 64 << 20, vec![&body], &body),
            ("cache, new series", 64 << 20, vec![&body], &other),
            // Filled and cleared once: its buffers have their size.
            (
                "cache, new series, grown",
                1 << 20,
                vec![&body, &other],
                &third,
            ),
        ] {
            let mut routing = FastRouting::new(budget);
            let mut batches = HashMap::new();
            // The first requests warm the buffers that are kept per thread.
            for body in warm {
                route_body(body, &routes, &mut routing, &mut batches);
            }
            for batch in batches.values_mut() {
                batch.encoded.clear();
            }
            let region = Region::new(GLOBAL);
            let series = route_body(measured, &routes, &mut routing, &mut batches);
            let change = region.change();
            let allocations = change.allocations + change.reallocations;
            eprintln!(
                "{} route(s), {case}: {series} series written, {allocations} allocations",
                routes.len()
            );
            assert!(series > SERIES / 2, "the rules keep most series");
            // The arena's doublings, for new series in a cache not grown yet.
            let growth = if case == "cache, new series" { 16 } else { 0 };
            assert!(
                allocations <= (per_route + growth) * routes.len(),
                "{case}: {allocations} allocations for {series} series"
            );
        }
    }
}
