fn main() {
    eprintln!("tracking-worker: not implemented yet");
    std::process::exit(1);
}
