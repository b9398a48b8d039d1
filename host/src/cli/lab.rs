//! `cniscope lab`: lab clusters in network namespaces, built from the compiled-in scripts.

use super::LabCommand;
use anyhow::{Context, Result};
use cniscope::lab::{SCENARIOS, Scripts, check_machine};

pub fn run(cmd: LabCommand) -> Result<()> {
    if let LabCommand::List = cmd {
        for (name, _, _, what) in SCENARIOS {
            println!("{name:16} {what}");
        }
        return Ok(());
    }
    check_machine()?;
    match cmd {
        LabCommand::List => unreachable!("answered above"),
        LabCommand::Up {
            scenario,
            id,
            dir,
            plugins,
        } => {
            let scripts = Scripts::write(Some(&plugins))?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            match scripts.up(&scenario, &id, &dir) {
                Ok(()) => {}
                // Someone else's lab: left as it is.
                Err(e @ cniscope::lab::LabError::InUse(_)) => return Err(e.into()),
                Err(e) => {
                    let _ = scripts.down(&id);
                    return Err(e.into());
                }
            }
            println!(
                "lab {id} ({scenario}) is up: namespaces {id}-*\n  capture: cniscope run -c {}\n  traffic: cniscope lab traffic {scenario} --id {id}\n  down:    cniscope lab down --id {id}",
                dir.join("cniscope.toml").display()
            );
        }
        LabCommand::Traffic { scenario, id } => Scripts::write(None)?.traffic(&scenario, &id)?,
        LabCommand::Down { id } => Scripts::write(None)?.down(&id)?,
    }
    Ok(())
}
