fn main() {
    let args: Vec<String> = std::env::args().collect();
    std::process::exit(berth_runtime::shim::server::main_with_args(&args));
}
