//! Groups typed instructions into build stages: ARGs before the first FROM are global ("meta")
//! ARGs; every other instruction belongs to the stage its FROM opened.

use serde::Serialize;

use super::error::{InstructionError, InstructionErrorKind};
use super::{parse_instruction, ArgDecl, Command, From, Instruction};
use crate::parser::Dockerfile;

/// A global ARG: visible to FROM lines only, re-imported into a stage by `ARG name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MetaArg {
    pub arg: ArgDecl,
    pub line: usize,
}

/// One stage: its FROM and the instructions after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stage {
    pub from: From,
    /// The FROM instruction itself (for locations).
    pub from_instruction: Instruction,
    pub instructions: Vec<Instruction>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stages {
    pub meta_args: Vec<MetaArg>,
    pub stages: Vec<Stage>,
}

/// Types every instruction and groups them into stages.
pub fn parse_stages(dockerfile: &Dockerfile) -> Result<Stages, InstructionError> {
    let mut out = Stages::default();
    for node in &dockerfile.children {
        let instruction = parse_instruction(node)?;
        match (&instruction.command, out.stages.last_mut()) {
            (Command::From(from), _) => out.stages.push(Stage {
                from: from.clone(),
                from_instruction: instruction.clone(),
                instructions: Vec::new(),
            }),
            (Command::Arg { args }, None) => {
                let line = instruction.line;
                out.meta_args.extend(args.iter().map(|arg| MetaArg {
                    arg: arg.clone(),
                    line,
                }));
            }
            (_, Some(stage)) => stage.instructions.push(instruction),
            (_, None) => {
                return Err(InstructionError {
                    kind: InstructionErrorKind::NoStage(node.keyword.to_ascii_uppercase()),
                    line: node.start_line,
                    end_line: node.end_line,
                    column: node.column,
                })
            }
        }
    }
    Ok(out)
}
