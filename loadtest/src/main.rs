//! Load generator for cdnsign (filled in by the throughput work).

fn main() {
    eprintln!("cdnsign-loadtest: not built yet; see README");
    std::process::exit(2);
}
