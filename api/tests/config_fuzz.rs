//! Fuzz-style: random and mutated configs always give a clean error or a config, never a
//! panic, and each parse ends quickly (a hang or a quadratic blow-up shows as a timeout here).
//! The generator is a fixed-seed xorshift, so a failure reproduces.

use std::time::{Duration, Instant};

use cairn_api::config::MachineConfig;

/// Far above any honest parse (milliseconds): only a runaway parse gets near it.
const PER_INPUT: Duration = Duration::from_secs(2);

const SEED_CONFIG: &str = "version: v1alpha1
machine:
  clientCa: {crt: \"-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n\"}
  nodeCa: {crt: \"-----BEGIN CERTIFICATE-----\\nMIIC\\n-----END CERTIFICATE-----\\n\", key: k}
  hostname: edge-1
  network:
    interfaces:
      - name: eth0
        dhcp: false
        addresses: [10.0.0.2/24, \"fd00::2/64\"]
        routes: [{network: 0.0.0.0/0, gateway: 10.0.0.1}]
  sysctls: {net.ipv4.ip_forward: \"1\"}
  files: [{path: /var/a, content: x, op: create}]
  pods:
    - apiVersion: v1
      kind: Pod
      metadata: {name: web}
      spec: {containers: [{name: web, image: busybox, args: [httpd, -f]}]}
";

/// Pieces that stress YAML parsers: nesting, anchors, tags, odd scalars, documents.
const FRAGMENTS: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    "&a ",
    "*a",
    "!!binary ",
    "!tag ",
    "---\n",
    "...\n",
    ": ",
    "- ",
    "? ",
    "\"\\u0000\"",
    "'",
    "|\n",
    ">-\n",
    "\t",
    "#",
    "~",
    "0x",
    "1e999",
    "<<: *a\n",
    "\u{feff}",
];

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mutate(rng: &mut XorShift, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(out.len() + 1);
        match rng.below(5) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let fragment = FRAGMENTS[rng.below(FRAGMENTS.len())].repeat(1 + rng.below(200));
                out.splice(at..at, fragment.into_bytes());
            }
            2 => out.truncate(at),
            3 if at < out.len() => {
                let end = (at + rng.below(64)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            _ => out.insert(at.min(out.len()), rng.next() as u8),
        }
    }
    out
}

fn parse_bounded(input: &[u8]) {
    let started = Instant::now();
    let result = std::panic::catch_unwind(|| MachineConfig::from_yaml(input));
    let elapsed = started.elapsed();
    let shown = String::from_utf8_lossy(&input[..input.len().min(200)]).into_owned();
    assert!(result.is_ok(), "panicked on {shown:?}");
    assert!(elapsed < PER_INPUT, "took {elapsed:?} on {shown:?}");
    if let Ok(Err(error)) = result {
        assert!(!error.to_string().is_empty());
    }
}

#[test]
fn mutated_configs_never_panic_or_hang() {
    let mut rng = XorShift(0x5eed_cafe_f00d_0001);
    for _ in 0..3000 {
        parse_bounded(&mutate(&mut rng, SEED_CONFIG.as_bytes()));
    }
}

#[test]
fn random_bytes_and_hostile_shapes_never_panic_or_hang() {
    let mut rng = XorShift(0x5eed_cafe_f00d_0002);
    for _ in 0..500 {
        let len = rng.below(4096);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        parse_bounded(&bytes);
    }
    for fragment in FRAGMENTS {
        parse_bounded(fragment.repeat(200_000).as_bytes());
        parse_bounded(
            format!("version: v1alpha1\nmachine: {}", fragment.repeat(50_000)).as_bytes(),
        );
    }
}
