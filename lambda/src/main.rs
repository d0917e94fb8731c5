//! The Lambda forwarder. It is filled in by the Lambda issue; for now it only proves that the
//! workspace builds a second binary against the core crate.

fn main() {
    eprintln!(
        "logferry-lambda {}: the Lambda forwarder is not implemented yet",
        logferry::VERSION
    );
    std::process::exit(2);
}
