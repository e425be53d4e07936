fn main() {
    eprintln!("tracking-operator: not implemented yet");
    std::process::exit(1);
}
