//! `polybot-host inspect PATH`: what a module imports and exports, and whether
//! it satisfies the `polybot:strategy` contract.

use std::path::Path;
use std::process::ExitCode;

use wasmtime::component::types::ComponentItem;

use super::Failure;
use crate::sandbox::{LoadError, Sandbox, SandboxLimits};

pub fn inspect(path: &Path) -> Result<ExitCode, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::runtime)?;
    runtime.block_on(inspect_async(path))
}

async fn inspect_async(path: &Path) -> Result<ExitCode, Failure> {
    let sandbox = Sandbox::new(SandboxLimits::default(), None).map_err(Failure::runtime)?;
    let engine = sandbox.engine().clone();
    outln!("{}", path.display());
    match sandbox.load(path) {
        Ok(module) => {
            print_items(&engine, module.component());
            let mut instance = module.instantiate("inspect").await.map_err(|e| {
                Failure::bad_input(anyhow::anyhow!(
                    "{}: cannot instantiate: {e}",
                    path.display()
                ))
            })?;
            let info = instance.describe().await.map_err(|e| {
                Failure::bad_input(anyhow::anyhow!("{}: describe failed: {e}", path.display()))
            })?;
            outln!("  sha256      {}", module.digest());
            outln!(
                "  strategy    {} {} (state version {})",
                info.name,
                info.version,
                info.state_version
            );
            outln!("  contract    satisfies polybot:strategy@0.1.0");
            Ok(ExitCode::SUCCESS)
        }
        Err(LoadError::WrongWorld { path: p, reason }) => {
            // Still show what it has, so the author can see what is missing.
            if let Ok(bytes) = std::fs::read(&p)
                && let Ok(component) = wasmtime::component::Component::new(&engine, &bytes)
            {
                print_items(&engine, &component);
            }
            Err(Failure::bad_input(LoadError::WrongWorld {
                path: p,
                reason,
            }))
        }
        Err(e) => Err(Failure::bad_input(e)),
    }
}

fn print_items(engine: &wasmtime::Engine, component: &wasmtime::component::Component) {
    let ty = component.component_type();
    outln!("  imports");
    for (name, item) in ty.imports(engine) {
        outln!("    {:<10} {name}", kind(&item.ty));
    }
    outln!("  exports");
    for (name, item) in ty.exports(engine) {
        outln!("    {:<10} {name}", kind(&item.ty));
    }
}

fn kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "func",
        ComponentItem::CoreFunc(_) => "core-func",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    }
}
