//! The `meshcap` binary: a thin shell around [`meshcap::app::main`].

fn main() {
    let code = meshcap::app::main(std::env::args_os(), meshcap::sys::host::Env::from_process());
    std::process::exit(code);
}
