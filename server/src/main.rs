//! `ax`: see `ax --help`.

fn main() {
    std::process::exit(ax_server::cli::main());
}
