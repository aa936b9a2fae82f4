//! `linux.seccomp`: the OCI seccomp profile compiled to BPF with seccompiler, and installed on
//! the container's init before it becomes the user's program.
//!
//! **Compile** ([`compile`]) is pure: spec in, one BPF program out, nothing installed, so every
//! rule is unit-tested by running the program through a small BPF interpreter. It runs in the
//! init before "ready", so a bad profile fails `create` with its own message. **Install**
//! ([`CompiledProfile::install`]) is one `seccomp(SECCOMP_SET_MODE_FILTER)`. When to install is
//! runc's choice: without `noNewPrivileges` the kernel wants `CAP_SYS_ADMIN`, so the filter goes
//! in before the capabilities are dropped; with it, as late as possible, right before `execve`,
//! so the fewest of our own syscalls run under the user's filter.
//!
//! **One part per action, chained.** A seccompiler `SeccompFilter` has one action for the
//! syscalls it matches and one for the rest, while a profile mixes actions (Docker's: allow ~350
//! syscalls, `EPERM` by default, `ENOSYS` for `clone3`). So the profile is compiled in parts:
//! - for every action A other than ALLOW and the default, a part returns A for its rules'
//!   syscalls (under their argument conditions) and ALLOW for the rest;
//! - when the default action is not ALLOW, a last part returns ALLOW for every syscall that has a
//!   rule and the default action for the rest.
//!
//! The parts are chained into one program: each ALLOW of a part but the last becomes a jump to
//! the next part, so the first non-ALLOW answer decides. (Separate filters would not do: the
//! first one installed, denying `seccomp` itself, would refuse the next.) A syscall with a rule
//! gets its rule's action, any other the default. If rules with different actions match the same
//! call, the most severe wins, as the parts are ordered kill process > kill thread > trap >
//! errno > log (the kernel's own precedence between filters; libseccomp would refuse or pick one,
//! and profiles in the wild do not do this).
//!
//! **What is supported**: actions ALLOW, ERRNO (`errnoRet`, default EPERM), KILL (= KILL_THREAD,
//! as in libseccomp), KILL_THREAD, KILL_PROCESS, TRAP, LOG; argument operators EQ, NE, LT, LE,
//! GT, GE, MASKED_EQ (`value` is the mask, `valueTwo` the expected value), compared on all 64
//! bits like libseccomp. Several arguments in one rule must all match, except when one argument
//! index appears twice: then, like runc, each comparison is a rule of its own and any may match.
//! Flags LOG and SPEC_ALLOW are passed to the kernel (TSYNC too, a no-op for the single-threaded
//! init). Names this architecture does not have are skipped, as runc does.
//!
//! **What is refused**, with an error naming it: SCMP_ACT_NOTIFY (no seccomp agent: user
//! notification and `listenerPath`, `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`) and SCMP_ACT_TRACE
//! (no tracer is ever attached). Unknown actions, operators and flags already fail parsing.
//!
//! **Architectures**: the filter is compiled for the machine's own ABI (x86_64 or aarch64);
//! the profile's `architectures` list may name others, which are not filtered but refused: a
//! syscall from another ABI (32-bit x86 through `int 0x80`, x32 on x86_64) kills the process, so
//! it can never slip past a deny-list profile. 32-bit binaries therefore do not run under a
//! seccomp profile here.

mod syscall_table;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator, Process, Spec};
use seccompiler::{BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch};

use crate::error::{Context, Error, Result};
use crate::sys;

/// The kernel's limit on the length of one BPF program (`BPF_MAXINSNS`).
const MAX_PROGRAM_LEN: usize = 4096;
/// On x86_64, x32 syscalls carry the native audit arch and this bit in their number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// The errno of an ERRNO action without `errnoRet` (runc's default).
const DEFAULT_ERRNO: u32 = libc::EPERM as u32;

/// An ABI the profile can be compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    X86_64,
    Aarch64,
}

impl Abi {
    /// The ABI of the machine we run on, if seccomp profiles are supported there.
    pub fn native() -> Result<Abi> {
        if cfg!(target_arch = "x86_64") {
            Ok(Abi::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Ok(Abi::Aarch64)
        } else {
            Err(Error::ConfigInvalid(format!(
                "linux.seccomp: profiles are supported on x86_64 and aarch64, not {} (remove linux.seccomp)",
                std::env::consts::ARCH
            )))
        }
    }

    fn target(self) -> TargetArch {
        match self {
            Abi::X86_64 => TargetArch::x86_64,
            Abi::Aarch64 => TargetArch::aarch64,
        }
    }

    /// The syscall's number on this ABI, `None` if the ABI does not have it.
    pub fn syscall_number(self, name: &str) -> Option<i64> {
        let table = match self {
            Abi::X86_64 => syscall_table::X86_64,
            Abi::Aarch64 => syscall_table::AARCH64,
        };
        table.binary_search_by(|(n, _)| (*n).cmp(name)).ok().map(|i| table[i].1)
    }
}

/// A profile compiled to BPF, ready to install.
pub struct CompiledProfile {
    /// `None` when the profile allows everything (nothing to install).
    program: Option<Vec<libc::sock_filter>>,
    /// `SECCOMP_FILTER_FLAG_*` bits from the profile's `flags`.
    flags: libc::c_ulong,
    /// Syscall names the profile lists that this ABI does not have (skipped).
    skipped: Vec<String>,
}

impl fmt::Debug for CompiledProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledProfile")
            .field("instructions", &self.program.as_ref().map_or(0, Vec::len))
            .field("flags", &self.flags)
            .field("skipped", &self.skipped)
            .finish()
    }
}

impl CompiledProfile {
    /// Installs the filter on the calling thread. Without no_new_privs this needs
    /// `CAP_SYS_ADMIN`; it does not set no_new_privs itself (seccompiler's `apply_filter` would).
    pub fn install(&self) -> Result<()> {
        let Some(program) = &self.program else {
            return Ok(());
        };
        let started = Instant::now();
        sys::install_seccomp_filter(program, self.flags)
            .context(|| "install the linux.seccomp filter (without noNewPrivileges this needs CAP_SYS_ADMIN)".into())?;
        tracing::debug!(took = ?started.elapsed(), "installed linux.seccomp");
        Ok(())
    }

    /// The BPF program, `None` if there is nothing to filter.
    #[cfg(test)]
    pub fn program(&self) -> Option<&[libc::sock_filter]> {
        self.program.as_deref()
    }

    /// Names the profile lists that this ABI does not have.
    #[cfg(test)]
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }
}

/// Compiles the spec's `linux.seccomp` for this machine; `None` when the spec has none.
pub fn compile_spec(spec: &Spec) -> Result<Option<CompiledProfile>> {
    match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => Ok(Some(compile(profile, Abi::native()?)?)),
        None => Ok(None),
    }
}

/// runc's timing: without `noNewPrivileges`, installs the filter now, while `CAP_SYS_ADMIN` is
/// still effective (call it before the capabilities are dropped); with it, returns the filter
/// for the caller to install right before `execve`.
pub fn install_unless_no_new_privileges(profile: Option<CompiledProfile>, process: &Process) -> Result<Option<CompiledProfile>> {
    match profile {
        Some(profile) if process.no_new_privileges() != Some(true) => {
            profile.install()?;
            Ok(None)
        }
        late => Ok(late),
    }
}

/// Which syscall calls a rule matches.
#[derive(Clone)]
enum Matches {
    /// Every call, whatever its arguments.
    All,
    /// Calls that satisfy any of these rules (each a conjunction of argument conditions).
    Any(Vec<SeccompRule>),
}

impl Matches {
    fn merge(&mut self, more: Matches) {
        match (&mut *self, more) {
            (Matches::All, _) => {}
            (_, Matches::All) => *self = Matches::All,
            (Matches::Any(rules), Matches::Any(more)) => rules.extend(more),
        }
    }

    /// seccompiler's form: an empty rule list matches on the syscall number alone.
    fn into_rules(self) -> Vec<SeccompRule> {
        match self {
            Matches::All => Vec::new(),
            Matches::Any(rules) => rules,
        }
    }
}

type SyscallMatches = BTreeMap<i64, Matches>;

/// Compiles a profile for `abi`. Pure: nothing is installed.
pub fn compile(profile: &LinuxSeccomp, abi: Abi) -> Result<CompiledProfile> {
    let started = Instant::now();
    if let Some(path) = profile.listener_path() {
        return Err(invalid(format!(
            "listenerPath {} asks for a seccomp agent, but this runtime does not support \
             SCMP_ACT_NOTIFY (remove listenerPath and the NOTIFY rules)",
            path.display()
        )));
    }
    let flags = filter_flags(profile.flags().as_deref().unwrap_or(&[]))?;
    let default = action(profile.default_action(), profile.default_errno_ret(), "defaultAction")?;

    // Rules grouped by action, in the order the actions first appear.
    let mut by_action: Vec<(SeccompAction, SyscallMatches)> = Vec::new();
    let mut skipped = Vec::new();
    for (i, syscall) in profile.syscalls().iter().flatten().enumerate() {
        let act = action(syscall.action(), syscall.errno_ret(), &format!("syscalls[{i}].action"))?;
        let matches = arg_matches(syscall.args().as_deref().unwrap_or(&[]), i)?;
        if act == default {
            // Same as not listing it (runc skips these too).
            continue;
        }
        let group = match by_action.iter().position(|(a, _)| *a == act) {
            Some(at) => &mut by_action[at].1,
            None => {
                by_action.push((act, SyscallMatches::new()));
                &mut by_action.last_mut().expect("just pushed").1
            }
        };
        for name in syscall.names() {
            match abi.syscall_number(name) {
                Some(nr) => match group.get_mut(&nr) {
                    Some(existing) => existing.merge(matches.clone()),
                    None => {
                        group.insert(nr, matches.clone());
                    }
                },
                None => skipped.push(name.clone()),
            }
        }
    }
    by_action.retain(|(_, group)| !group.is_empty());
    // Most severe first: the first part that does not allow a call decides.
    by_action.sort_by_key(|(act, _)| severity(act));

    let mut parts = Vec::new();
    let mut listed = SyscallMatches::new();
    for (act, group) in by_action {
        // Everything with a rule passes the default part; the action parts decide.
        if default != SeccompAction::Allow {
            for (nr, matches) in &group {
                match listed.get_mut(nr) {
                    Some(existing) => existing.merge(matches.clone()),
                    None => {
                        listed.insert(*nr, matches.clone());
                    }
                }
            }
        }
        if act != SeccompAction::Allow {
            parts.push(part(group, SeccompAction::Allow, act, abi)?);
        }
    }
    if default != SeccompAction::Allow {
        parts.push(part(listed, default, SeccompAction::Allow, abi)?);
    }
    let compiled = CompiledProfile { program: chain(parts, abi)?, flags, skipped };
    tracing::debug!(took = ?started.elapsed(), ?compiled, "compiled linux.seccomp");
    Ok(compiled)
}

/// How severe an action is: lower wins (the kernel's precedence between stacked filters).
fn severity(act: &SeccompAction) -> u8 {
    match act {
        SeccompAction::KillProcess => 0,
        SeccompAction::KillThread => 1,
        SeccompAction::Trap => 2,
        SeccompAction::Errno(_) => 3,
        SeccompAction::Trace(_) => 4,
        SeccompAction::Log => 5,
        SeccompAction::Allow => 6,
    }
}

/// One part of the program: `matched` calls get `on_match`, all others `otherwise` (seccompiler
/// also kills calls from another audit arch).
fn part(matched: SyscallMatches, otherwise: SeccompAction, on_match: SeccompAction, abi: Abi) -> Result<BpfProgram> {
    let what = format!("the {on_match:?} rules");
    let rules = matched.into_iter().map(|(nr, m)| (nr, m.into_rules())).collect();
    let filter = SeccompFilter::new(rules, otherwise, on_match, abi.target()).map_err(|e| invalid(format!("{what}: {e}")))?;
    filter.try_into().map_err(|e| invalid(format!("{what}: {e}")))
}

/// Chains the parts into one program behind the ABI guard: in every part but the last, "return
/// ALLOW" becomes "jump to the next part" (same length, so no jump inside a part moves).
fn chain(parts: Vec<BpfProgram>, abi: Abi) -> Result<Option<Vec<libc::sock_filter>>> {
    if parts.is_empty() {
        return Ok(None);
    }
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
    let mut out = abi_guard(abi);
    let last = parts.len() - 1;
    for (n, part) in parts.into_iter().enumerate() {
        let next_part = out.len() + part.len();
        for i in part {
            let (code, k) = if n < last && i.code == RET && i.k == libc::SECCOMP_RET_ALLOW {
                (JA, (next_part - out.len() - 1) as u32)
            } else {
                (i.code, i.k)
            };
            out.push(libc::sock_filter { code, jt: i.jt, jf: i.jf, k });
        }
    }
    if out.len() > MAX_PROGRAM_LEN {
        return Err(invalid(format!(
            "the profile compiles to {} BPF instructions, more than the kernel's \
             {MAX_PROGRAM_LEN}: list fewer syscalls or argument conditions",
            out.len()
        )));
    }
    Ok(Some(out))
}

/// Instructions run before seccompiler's parts. seccompiler checks the audit arch (and kills
/// calls from another one), but x32 syscalls on x86_64 carry the x86_64 audit arch and a number
/// with bit 30 set that no rule matches: under a deny-list profile they would bypass every rule.
/// Kill them too (a negative number, like `syscall(-1)`, is left to the rules, which return
/// ENOSYS through the kernel or the default action).
fn abi_guard(abi: Abi) -> Vec<libc::sock_filter> {
    const LD_NR: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    match abi {
        Abi::X86_64 => vec![
            insn(LD_NR, 0, 0, 0),
            // nr >= 0x8000_0000 (negative): on to the rules.
            insn(JGE, 2, 0, 0x8000_0000),
            // nr >= 0x4000_0000: x32.
            insn(JGE, 0, 1, X32_SYSCALL_BIT),
            insn(RET, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        ],
        Abi::Aarch64 => Vec::new(),
    }
}

/// The spec's action as seccompiler's; `what` names the field for errors.
fn action(act: LinuxSeccompAction, errno_ret: Option<u32>, what: &str) -> Result<SeccompAction> {
    Ok(match act {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno_ret.unwrap_or(DEFAULT_ERRNO)),
        // libseccomp's SCMP_ACT_KILL is SCMP_ACT_KILL_THREAD.
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => SeccompAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(invalid(format!(
                "{what} SCMP_ACT_NOTIFY (seccomp user notification) is not supported by this runtime: \
                 use SCMP_ACT_ERRNO or SCMP_ACT_KILL_PROCESS instead"
            )));
        }
        LinuxSeccompAction::ScmpActTrace => {
            return Err(invalid(format!(
                "{what} SCMP_ACT_TRACE is not supported by this runtime (no tracer is attached to \
                 containers): use SCMP_ACT_ERRNO or SCMP_ACT_LOG instead"
            )));
        }
    })
}

/// The spec's flags as `SECCOMP_FILTER_FLAG_*` bits.
fn filter_flags(flags: &[LinuxSeccompFilterFlag]) -> Result<libc::c_ulong> {
    let mut bits = 0;
    for flag in flags {
        bits |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err(invalid(
                    "flag SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV only applies to SCMP_ACT_NOTIFY, which \
                     this runtime does not support (remove the flag)"
                        .into(),
                ));
            }
        };
    }
    Ok(bits)
}

/// The calls a rule with these argument comparisons matches (runc's semantics, see the module
/// doc); `rule` is the index in `syscalls` for errors.
fn arg_matches(args: &[LinuxSeccompArg], rule: usize) -> Result<Matches> {
    if args.is_empty() {
        return Ok(Matches::All);
    }
    let conditions =
        args.iter().enumerate().map(|(j, arg)| condition(arg, &format!("syscalls[{rule}].args[{j}]"))).collect::<Result<Vec<_>>>()?;
    let mut indexes: Vec<usize> = args.iter().map(|a| a.index()).collect();
    indexes.sort_unstable();
    let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
    let rules =
        if repeated { conditions.into_iter().map(|c| rule_of(vec![c])).collect::<Result<_>>()? } else { vec![rule_of(conditions)?] };
    Ok(Matches::Any(rules))
}

fn rule_of(conditions: Vec<SeccompCondition>) -> Result<SeccompRule> {
    SeccompRule::new(conditions).map_err(|e| invalid(e.to_string()))
}

fn condition(arg: &LinuxSeccompArg, what: &str) -> Result<SeccompCondition> {
    let index = u8::try_from(arg.index())
        .ok()
        .filter(|i| *i <= 5)
        .ok_or_else(|| invalid(format!("{what}.index {} is out of range: syscalls have arguments 0 to 5", arg.index())))?;
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
        // libseccomp: (arg & value) == valueTwo.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (SeccompCmpOp::MaskedEq(arg.value()), arg.value_two().unwrap_or(0)),
    };
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value).map_err(|e| invalid(format!("{what}: {e}")))
}

fn invalid(msg: String) -> Error {
    Error::ConfigInvalid(format!("linux.seccomp: {msg}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const RET_KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;
    const RET_KILL_THREAD: u32 = libc::SECCOMP_RET_KILL_THREAD;
    const RET_TRAP: u32 = libc::SECCOMP_RET_TRAP;
    const RET_LOG: u32 = libc::SECCOMP_RET_LOG;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const AUDIT_ARCH_I386: u32 = 0x4000_0003;
    const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;

    fn errno(e: i32) -> u32 {
        libc::SECCOMP_RET_ERRNO | e as u32
    }

    /// A syscall as the kernel hands it to the filters (`struct seccomp_data`).
    struct Call {
        nr: u32,
        arch: u32,
        args: [u64; 6],
    }

    impl Call {
        fn new(name: &str) -> Call {
            let nr = Abi::X86_64.syscall_number(name).unwrap_or_else(|| panic!("{name} is an x86_64 syscall"));
            Call { nr: nr as u32, arch: AUDIT_ARCH_X86_64, args: [0; 6] }
        }

        fn arg(mut self, index: usize, value: u64) -> Call {
            self.args[index] = value;
            self
        }

        fn load(&self, offset: u32) -> u32 {
            match offset {
                0 => self.nr,
                4 => self.arch,
                16..=63 => {
                    // Little-endian: the low half first, the high half 4 bytes later.
                    let arg = self.args[(offset as usize - 16) / 8];
                    (arg >> ((offset % 8) * 8)) as u32
                }
                _ => panic!("load from offset {offset}"),
            }
        }
    }

    /// Runs one classic-BPF program (the instructions seccompiler and our guard emit).
    fn run_program(program: &[libc::sock_filter], call: &Call) -> u32 {
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = program[pc];
            let code = u32::from(i.code);
            pc += 1;
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => acc = call.load(i.k),
                c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => acc &= i.k,
                c if c == libc::BPF_JMP | libc::BPF_JA => pc += i.k as usize,
                c if c == libc::BPF_RET | libc::BPF_K => return i.k,
                c if c & 0x07 == libc::BPF_JMP => {
                    let taken = match c & 0xf0 {
                        op if op == libc::BPF_JEQ => acc == i.k,
                        op if op == libc::BPF_JGT => acc > i.k,
                        op if op == libc::BPF_JGE => acc >= i.k,
                        op => panic!("jump op {op:#x}"),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                other => panic!("instruction {other:#x}"),
            }
        }
    }

    /// What the installed filter returns for `call` (ALLOW with no filter).
    fn verdict(profile: &CompiledProfile, call: &Call) -> u32 {
        profile.program().map_or(RET_ALLOW, |program| run_program(program, call))
    }

    fn compile_json(profile: serde_json::Value) -> Result<CompiledProfile> {
        let profile: LinuxSeccomp = serde_json::from_value(profile).expect("a valid LinuxSeccomp");
        compile(&profile, Abi::X86_64)
    }

    fn profile(value: serde_json::Value) -> CompiledProfile {
        compile_json(value).expect("the profile compiles")
    }

    #[track_caller]
    fn refused(value: serde_json::Value) -> String {
        compile_json(value).expect_err("the profile is refused").to_string()
    }

    #[test]
    fn errno_rule_under_default_allow_blocks_only_its_syscalls() {
        let p = profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO" }],
        }));
        assert_eq!(verdict(&p, &Call::new("mkdir")), errno(libc::EPERM));
        assert_eq!(verdict(&p, &Call::new("mkdirat")), errno(libc::EPERM));
        assert_eq!(verdict(&p, &Call::new("write")), RET_ALLOW);
        assert_eq!(verdict(&p, &Call::new("execve")), RET_ALLOW);
    }

    #[test]
    fn errno_ret_is_used_for_rules_and_the_default() {
        let p = profile(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "syscalls": [
                { "names": ["write", "exit_group"], "action": "SCMP_ACT_ALLOW" },
                { "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38 },
            ],
        }));
        assert_eq!(verdict(&p, &Call::new("write")), RET_ALLOW);
        assert_eq!(verdict(&p, &Call::new("clone3")), errno(libc::ENOSYS));
        assert_eq!(verdict(&p, &Call::new("mkdir")), errno(libc::EPERM));
        let p = profile(json!({ "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 13 }));
        assert_eq!(verdict(&p, &Call::new("getpid")), errno(libc::EACCES));
    }

    #[test]
    fn every_supported_action_reaches_its_syscall() {
        let p = profile(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                { "names": ["read"], "action": "SCMP_ACT_ALLOW" },
                { "names": ["getpid"], "action": "SCMP_ACT_KILL" },
                { "names": ["getppid"], "action": "SCMP_ACT_KILL_THREAD" },
                { "names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS" },
                { "names": ["getuid"], "action": "SCMP_ACT_TRAP" },
                { "names": ["getgid"], "action": "SCMP_ACT_LOG" },
                { "names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28 },
            ],
        }));
        let expected = [
            ("read", RET_ALLOW),
            ("getpid", RET_KILL_THREAD),
            ("getppid", RET_KILL_THREAD),
            ("uname", RET_KILL_PROCESS),
            ("getuid", RET_TRAP),
            ("getgid", RET_LOG),
            ("mkdir", errno(libc::ENOSPC)),
            ("rmdir", errno(libc::EPERM)),
        ];
        for (name, ret) in expected {
            assert_eq!(verdict(&p, &Call::new(name)), ret, "{name}");
        }
    }

    #[test]
    fn a_default_kill_keeps_rules_with_milder_actions() {
        let p = profile(json!({
            "defaultAction": "SCMP_ACT_KILL_PROCESS",
            "syscalls": [
                { "names": ["write"], "action": "SCMP_ACT_ALLOW" },
                { "names": ["mkdir"], "action": "SCMP_ACT_ERRNO" },
                { "names": ["getpid"], "action": "SCMP_ACT_LOG" },
            ],
        }));
        assert_eq!(verdict(&p, &Call::new("write")), RET_ALLOW);
        assert_eq!(verdict(&p, &Call::new("mkdir")), errno(libc::EPERM));
        assert_eq!(verdict(&p, &Call::new("getpid")), RET_LOG);
        assert_eq!(verdict(&p, &Call::new("read")), RET_KILL_PROCESS);
    }

    #[test]
    fn comparison_operators_compare_all_64_bits() {
        const HIGH: u64 = 1 << 32;
        // (operator, value, [(argument, refused)]).
        type Case = (&'static str, u64, &'static [(u64, bool)]);
        let cases: [Case; 6] = [
            ("SCMP_CMP_EQ", HIGH + 5, &[(HIGH + 5, true), (5, false), (HIGH + 6, false)]),
            ("SCMP_CMP_NE", HIGH + 5, &[(HIGH + 5, false), (5, true), (HIGH, true)]),
            ("SCMP_CMP_LT", HIGH + 5, &[(HIGH + 4, true), (HIGH + 5, false), (2 * HIGH, false), (7, true)]),
            ("SCMP_CMP_LE", HIGH + 5, &[(HIGH + 5, true), (HIGH + 6, false), (0, true)]),
            ("SCMP_CMP_GT", HIGH + 5, &[(HIGH + 6, true), (HIGH + 5, false), (u64::MAX, true), (6, false)]),
            ("SCMP_CMP_GE", HIGH + 5, &[(HIGH + 5, true), (HIGH + 4, false), (2 * HIGH, true)]),
        ];
        for (op, value, checks) in cases {
            let p = profile(json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{ "names": ["personality"], "action": "SCMP_ACT_ERRNO",
                               "args": [{ "index": 0, "value": value, "op": op }] }],
            }));
            for &(arg, blocked) in checks {
                let want = if blocked { errno(libc::EPERM) } else { RET_ALLOW };
                assert_eq!(verdict(&p, &Call::new("personality").arg(0, arg)), want, "{op} {value:#x} vs {arg:#x}");
            }
        }
    }

    #[test]
    fn masked_eq_masks_the_argument_with_value_and_compares_to_value_two() {
        // Docker's clone rule: refuse namespace flags (CLONE_NEWNS | ... = 0x7e020000).
        let p = profile(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{ "names": ["clone"], "action": "SCMP_ACT_ALLOW",
                           "args": [{ "index": 0, "value": 0x7e02_0000u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ" }] }],
        }));
        let clone = |flags: u64| verdict(&p, &Call::new("clone").arg(0, flags));
        assert_eq!(clone(libc::SIGCHLD as u64 | libc::CLONE_VM as u64), RET_ALLOW);
        assert_eq!(clone(libc::CLONE_NEWNS as u64 | libc::SIGCHLD as u64), errno(libc::EPERM));
        assert_eq!(clone(libc::CLONE_NEWUSER as u64), errno(libc::EPERM));
    }

    #[test]
    fn arguments_on_different_indexes_must_all_match() {
        let p = profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["socket"], "action": "SCMP_ACT_ERRNO", "args": [
                { "index": 0, "value": libc::AF_INET, "op": "SCMP_CMP_EQ" },
                { "index": 1, "value": libc::SOCK_RAW, "op": "SCMP_CMP_EQ" },
            ] }],
        }));
        let socket = |domain: i32, kind: i32| verdict(&p, &Call::new("socket").arg(0, domain as u64).arg(1, kind as u64));
        assert_eq!(socket(libc::AF_INET, libc::SOCK_RAW), errno(libc::EPERM));
        assert_eq!(socket(libc::AF_INET, libc::SOCK_STREAM), RET_ALLOW);
        assert_eq!(socket(libc::AF_UNIX, libc::SOCK_RAW), RET_ALLOW);
    }

    #[test]
    fn a_repeated_argument_index_makes_each_comparison_its_own_rule() {
        // runc's reading: personality(0) or personality(8) is allowed.
        let p = profile(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{ "names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [
                { "index": 0, "value": 0, "op": "SCMP_CMP_EQ" },
                { "index": 0, "value": 8, "op": "SCMP_CMP_EQ" },
            ] }],
        }));
        let personality = |v: u64| verdict(&p, &Call::new("personality").arg(0, v));
        assert_eq!(personality(0), RET_ALLOW);
        assert_eq!(personality(8), RET_ALLOW);
        assert_eq!(personality(9), errno(libc::EPERM));
    }

    #[test]
    fn an_unconditional_rule_wins_over_a_conditional_one_for_the_same_action() {
        let p = profile(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                { "names": ["personality"], "action": "SCMP_ACT_ALLOW",
                  "args": [{ "index": 0, "value": 0, "op": "SCMP_CMP_EQ" }] },
                { "names": ["personality"], "action": "SCMP_ACT_ALLOW" },
            ],
        }));
        assert_eq!(verdict(&p, &Call::new("personality").arg(0, 77)), RET_ALLOW);
    }

    #[test]
    fn unknown_syscall_names_are_skipped() {
        let p = profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["socketcall", "no_such_syscall", "mkdir"], "action": "SCMP_ACT_ERRNO" }],
        }));
        assert_eq!(p.skipped(), ["socketcall", "no_such_syscall"]);
        assert_eq!(verdict(&p, &Call::new("mkdir")), errno(libc::EPERM));
        let p = profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["_llseek"], "action": "SCMP_ACT_KILL" }],
        }));
        assert!(p.program().is_none(), "nothing to filter: {p:?}");
    }

    #[test]
    fn rules_with_the_default_action_change_nothing() {
        let p = profile(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                { "names": ["write"], "action": "SCMP_ACT_ALLOW" },
                { "names": ["mkdir"], "action": "SCMP_ACT_ERRNO" },
            ],
        }));
        let without = profile(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{ "names": ["write"], "action": "SCMP_ACT_ALLOW" }],
        }));
        let len = |p: &CompiledProfile| p.program().map_or(0, <[_]>::len);
        assert_eq!(len(&p), len(&without), "{p:?} vs {without:?}");
        assert_eq!(verdict(&p, &Call::new("mkdir")), errno(libc::EPERM));
    }

    #[test]
    fn conflicting_rules_resolve_to_the_most_severe_action() {
        let p = profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                { "names": ["uname"], "action": "SCMP_ACT_LOG" },
                { "names": ["uname"], "action": "SCMP_ACT_ERRNO" },
                { "names": ["uname", "getpid"], "action": "SCMP_ACT_KILL_PROCESS",
                  "args": [{ "index": 0, "value": 7, "op": "SCMP_CMP_EQ" }] },
                { "names": ["getpid"], "action": "SCMP_ACT_TRAP" },
            ],
        }));
        assert_eq!(verdict(&p, &Call::new("uname").arg(0, 7)), RET_KILL_PROCESS);
        assert_eq!(verdict(&p, &Call::new("uname")), errno(libc::EPERM));
        assert_eq!(verdict(&p, &Call::new("getpid").arg(0, 7)), RET_KILL_PROCESS);
        assert_eq!(verdict(&p, &Call::new("getpid")), RET_TRAP);
        assert_eq!(verdict(&p, &Call::new("getppid")), RET_ALLOW);
    }

    #[test]
    fn notify_and_trace_are_refused_by_name() {
        let msg = refused(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["mkdir"], "action": "SCMP_ACT_NOTIFY" }],
        }));
        assert!(msg.contains("SCMP_ACT_NOTIFY") && msg.contains("syscalls[0]"), "{msg}");
        let msg = refused(json!({ "defaultAction": "SCMP_ACT_NOTIFY" }));
        assert!(msg.contains("SCMP_ACT_NOTIFY") && msg.contains("defaultAction"), "{msg}");
        let msg = refused(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                { "names": ["read"], "action": "SCMP_ACT_ALLOW" },
                { "names": ["ptrace"], "action": "SCMP_ACT_TRACE", "errnoRet": 1 },
            ],
        }));
        assert!(msg.contains("SCMP_ACT_TRACE") && msg.contains("syscalls[1]"), "{msg}");
        let msg = refused(json!({ "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock" }));
        assert!(msg.contains("listenerPath") && msg.contains("/run/agent.sock"), "{msg}");
        let msg = refused(json!({
            "defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
        }));
        assert!(msg.contains("WAIT_KILLABLE_RECV"), "{msg}");
    }

    #[test]
    fn an_argument_index_past_5_is_refused() {
        let msg = refused(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["mmap"], "action": "SCMP_ACT_ERRNO",
                           "args": [{ "index": 6, "value": 0, "op": "SCMP_CMP_EQ" }] }],
        }));
        assert!(msg.contains("syscalls[0].args[0].index 6"), "{msg}");
    }

    #[test]
    fn unknown_actions_and_operators_fail_parsing() {
        let bad_action = json!({ "defaultAction": "SCMP_ACT_MAYBE" });
        assert!(serde_json::from_value::<LinuxSeccomp>(bad_action).is_err());
        let bad_op = json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{ "names": ["read"],
            "action": "SCMP_ACT_ERRNO", "args": [{ "index": 0, "value": 0, "op": "SCMP_CMP_ROUGHLY" }] }] });
        assert!(serde_json::from_value::<LinuxSeccomp>(bad_op).is_err());
    }

    #[test]
    fn flags_become_kernel_bits() {
        let p = profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        }));
        assert_eq!(p.flags, libc::SECCOMP_FILTER_FLAG_LOG | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW);
    }

    #[test]
    fn calls_from_other_abis_kill_the_process() {
        let p = profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{ "names": ["mkdir"], "action": "SCMP_ACT_ERRNO" }],
        }));
        // 32-bit x86 mkdir is 39; x32 mkdir is 83 | 0x40000000.
        let i386_mkdir = Call { nr: 39, arch: AUDIT_ARCH_I386, args: [0; 6] };
        assert_eq!(verdict(&p, &i386_mkdir), RET_KILL_PROCESS);
        let x32_mkdir = Call { nr: 83 | X32_SYSCALL_BIT, arch: AUDIT_ARCH_X86_64, args: [0; 6] };
        assert_eq!(verdict(&p, &x32_mkdir), RET_KILL_PROCESS);
        let negative = Call { nr: u32::MAX, arch: AUDIT_ARCH_X86_64, args: [0; 6] };
        assert_eq!(verdict(&p, &negative), RET_ALLOW);
    }

    #[test]
    fn aarch64_uses_its_own_numbers() {
        let spec: LinuxSeccomp = serde_json::from_value(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO" }],
        }))
        .unwrap();
        let p = compile(&spec, Abi::Aarch64).unwrap();
        assert_eq!(p.skipped(), ["mkdir"], "aarch64 has only mkdirat");
        let mkdirat = Call { nr: 34, arch: AUDIT_ARCH_AARCH64, args: [0; 6] };
        assert_eq!(verdict(&p, &mkdirat), errno(libc::EPERM));
        let on_x86 = Call { nr: 34, arch: AUDIT_ARCH_X86_64, args: [0; 6] };
        assert_eq!(verdict(&p, &on_x86), RET_KILL_PROCESS);
    }

    #[test]
    fn syscall_tables_are_sorted_and_agree_with_libc() {
        for table in [syscall_table::X86_64, syscall_table::AARCH64] {
            assert!(table.windows(2).all(|w| w[0].0 < w[1].0), "sorted, no duplicates");
        }
        #[cfg(target_arch = "x86_64")]
        let native = Abi::X86_64;
        #[cfg(target_arch = "aarch64")]
        let native = Abi::Aarch64;
        for (name, nr) in [
            ("read", libc::SYS_read),
            ("write", libc::SYS_write),
            ("mkdirat", libc::SYS_mkdirat),
            ("execve", libc::SYS_execve),
            ("personality", libc::SYS_personality),
            ("clone3", libc::SYS_clone3),
            ("openat2", libc::SYS_openat2),
            ("seccomp", libc::SYS_seccomp),
        ] {
            assert_eq!(native.syscall_number(name), Some(nr), "{name}");
        }
    }

    #[test]
    fn the_default_profile_allows_what_tasks_need_and_refuses_what_docker_refuses() {
        let p = compile(&crate::default_seccomp::default_seccomp(), Abi::X86_64).unwrap();
        let ns_flags = [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWCGROUP,
        ];
        let thread = (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND | libc::CLONE_THREAD) as u64;
        let allowed = [
            Call::new("read"),
            Call::new("execve"),
            Call::new("wait4"),
            Call::new("fork"),
            Call::new("vfork"),
            Call::new("clone").arg(0, libc::SIGCHLD as u64),
            Call::new("clone").arg(0, thread),
            Call::new("socket").arg(0, libc::AF_INET as u64),
            Call::new("personality").arg(0, 0),
            Call::new("personality").arg(0, 0xffff_ffff),
            Call::new("arch_prctl"),
            Call::new("seccomp"),
        ];
        for call in &allowed {
            assert_eq!(verdict(&p, call), RET_ALLOW, "nr {} args {:?}", call.nr, call.args);
        }
        // Docker dropped io_uring from its default profile in 2023: refused.
        let refused = [
            "unshare",
            "setns",
            "mount",
            "umount2",
            "pivot_root",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "ptrace",
            "process_vm_readv",
            "kexec_load",
            "init_module",
            "finit_module",
            "reboot",
            "swapon",
            "chroot",
            "userfaultfd",
            "perf_event_open",
            "settimeofday",
            "open_by_handle_at",
            "io_uring_setup",
            "fsopen",
            "move_mount",
        ];
        for name in refused {
            assert_eq!(verdict(&p, &Call::new(name)), errno(libc::EPERM), "{name}");
        }
        for flag in ns_flags {
            assert_eq!(verdict(&p, &Call::new("clone").arg(0, flag as u64 | libc::SIGCHLD as u64)), errno(libc::EPERM), "clone {flag:#x}");
        }
        assert_eq!(verdict(&p, &Call::new("clone3")), errno(libc::ENOSYS), "libc falls back to clone");
        assert_eq!(verdict(&p, &Call::new("socket").arg(0, libc::AF_VSOCK as u64)), errno(libc::EPERM));
        assert_eq!(verdict(&p, &Call::new("personality").arg(0, 0x0040_0000)), errno(libc::EPERM), "READ_IMPLIES_EXEC");
        let i386 = Call { nr: 11, arch: AUDIT_ARCH_I386, args: [0; 6] };
        assert_eq!(verdict(&p, &i386), RET_KILL_PROCESS, "another ABI cannot slip past the allow list");
        assert!(p.program().is_some_and(|prog| prog.len() <= MAX_PROGRAM_LEN), "{p:?}");
    }

    /// A Docker-sized allow-list: every x86_64 syscall but a few, default EPERM.
    fn docker_sized_profile() -> LinuxSeccomp {
        let denied = ["kexec_load", "reboot", "mount", "umount2", "pivot_root", "init_module"];
        let names: Vec<&str> = syscall_table::X86_64.iter().map(|(n, _)| *n).filter(|n| !denied.contains(n)).collect();
        serde_json::from_value(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                { "names": names, "action": "SCMP_ACT_ALLOW" },
                { "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38 },
                { "names": ["personality"], "action": "SCMP_ACT_ALLOW",
                  "args": [{ "index": 0, "value": 8, "op": "SCMP_CMP_EQ" }] },
            ],
        }))
        .unwrap()
    }

    #[test]
    fn a_docker_sized_profile_fits_the_kernel_limit() {
        let spec = docker_sized_profile();
        let started = Instant::now();
        let p = compile(&spec, Abi::X86_64).unwrap();
        let took = started.elapsed();
        assert!(p.program().is_some_and(|prog| prog.len() <= MAX_PROGRAM_LEN), "{p:?}");
        assert_eq!(verdict(&p, &Call::new("write")), RET_ALLOW);
        assert_eq!(verdict(&p, &Call::new("mount")), errno(libc::EPERM));
        assert_eq!(verdict(&p, &Call::new("clone3")), errno(libc::ENOSYS));
        eprintln!("compiled {} syscalls into {p:?} in {took:?}", syscall_table::X86_64.len());
    }
}
