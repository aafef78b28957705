//! The flag sets several test modules use, and argument-vector helpers.

/// The flags Istio's injector gives istio-init for a default sidecar (the standard apply).
pub const SIDECAR: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
];

/// A TPROXY sidecar: inbound ports tproxied, eth9 excluded, outbound port 9000 only.
pub const TPROXY: &[&str] = &[
    "-p", "15001", "-z", "15006", "-u", "1337", "-m", "TPROXY", "-i", "*", "-b", "*", "-d", "15090", "-c", "eth9",
    "-q", "9000",
];

/// An owned argument vector.
pub fn argv<S: AsRef<str>>(args: &[S]) -> Vec<String> {
    args.iter().map(|a| a.as_ref().to_string()).collect()
}

/// The arguments of a golden case's `args` file: one per line (an empty line is an empty
/// argument), the last line terminated by a newline or not.
pub fn args_file(text: &str) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    body.split('\n').map(str::to_string).collect()
}
