//! keepalived's `vrrp_sync_group` (keepalived/vrrp/vrrp_sync.c) as a pure
//! value: the members report what their machines say, the group decides
//! the state every member must follow. A group may span interfaces, whose
//! instances run in separate tasks: each task reports its members here
//! (under one lock, [`SyncHub`]) and follows the group's state when told
//! it changed, so the rules below are all there is to test.
//!
//! - any member with a fault of its own (a check, a tracked or its own
//!   interface) puts the group in FAULT, and every member with it, until no
//!   member has one; then the group is BACKUP;
//! - the group goes MASTER only when every member wants to (its
//!   master-down timer ran out, or it owns the addresses): a member whose
//!   master is still heard keeps the whole group BACKUP ("prefer backup
//!   state to avoid thrashing");
//! - a member leaving MASTER for BACKUP (a higher-priority master) takes the
//!   group, and every member, to BACKUP;
//! - when every member has stopped, the group is stopped (`STOP`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{mpsc, watch};

use crate::{
    config,
    vrrp::{machine::State, notify::NotifyJob, notify_fifo::NotifyFifos},
};

/// What a member's machine says, as the group needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberReport {
    pub state: State,
    /// A fault of its own (not one the group put it in).
    pub fault: bool,
    pub wants_master: bool,
}

impl Default for MemberReport {
    fn default() -> Self {
        Self {
            state: State::Initialize,
            fault: false,
            wants_master: false,
        }
    }
}

/// A group's state changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupChange {
    pub group: String,
    pub from: State,
    pub to: State,
}

struct Group {
    config: config::SyncGroup,
    /// Initialize until a member started, and again once all stopped.
    state: State,
    members: HashMap<String, MemberReport>,
}

impl Group {
    fn decide(&self, before: MemberReport, now: MemberReport) -> State {
        let members = || self.members.values();
        if members().all(|m| m.state == State::Initialize) {
            return State::Initialize;
        }
        if members().any(|m| m.fault) {
            return State::Fault;
        }
        match self.state {
            State::Initialize | State::Fault => State::Backup,
            State::Backup => {
                let all_want = members().all(|m| m.wants_master || m.state == State::Master);
                if all_want {
                    State::Master
                } else {
                    State::Backup
                }
            }
            State::Master => {
                // One member lost an election (not: stopped, or came back
                // from a fault the group already left).
                let lost = before.state == State::Master && now.state == State::Backup;
                if lost { State::Backup } else { State::Master }
            }
        }
    }
}

/// Every sync group of a configuration.
pub struct GroupSet {
    groups: Vec<Group>,
    /// Instance name -> index in `groups`.
    member_of: HashMap<String, usize>,
}

impl GroupSet {
    pub fn new(groups: &[config::SyncGroup]) -> Self {
        let mut member_of = HashMap::new();
        let groups = groups
            .iter()
            .enumerate()
            .map(|(index, g)| {
                for m in &g.members {
                    member_of.entry(m.clone()).or_insert(index);
                }
                Group {
                    config: g.clone(),
                    state: State::Initialize,
                    members: g
                        .members
                        .iter()
                        .map(|m| (m.clone(), MemberReport::default()))
                        .collect(),
                }
            })
            .collect();
        Self { groups, member_of }
    }

    pub fn is_member(&self, instance: &str) -> bool {
        self.member_of.contains_key(instance)
    }

    /// The state `instance`'s group is in (None: not in a group).
    pub fn state_of(&self, instance: &str) -> Option<State> {
        self.member_of.get(instance).map(|&g| self.groups[g].state)
    }

    /// Records what `instance` reports; the group's change, if any.
    pub fn report(&mut self, instance: &str, report: MemberReport) -> Option<GroupChange> {
        let &index = self.member_of.get(instance)?;
        let group = &mut self.groups[index];
        let before = group.members.insert(instance.to_owned(), report)?;
        let to = group.decide(before, report);
        let from = group.state;
        if to == from {
            return None;
        }
        group.state = to;
        tracing::info!(group = %group.config.name, from = from.name(), to = to.name(), "sync group changed state");
        Some(GroupChange {
            group: group.config.name.clone(),
            from,
            to,
        })
    }

    fn config(&self, name: &str) -> Option<&config::SyncGroup> {
        self.groups
            .iter()
            .map(|g| &g.config)
            .find(|g| g.name == name)
    }
}

/// What a member must do to follow its group (`None`: nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    EnterFault,
    LeaveFault,
    BecomeMaster,
    BecomeBackup,
}

/// The step that brings a member whose machine is in `state` (with a fault
/// of its own or not) to its group's `group` state.
pub fn follow(group: State, state: State, own_fault: bool) -> Option<Follow> {
    match (group, state) {
        (_, State::Initialize) | (State::Initialize, _) | (State::Fault, State::Fault) => None,
        (State::Fault, _) => Some(Follow::EnterFault),
        (_, State::Fault) if !own_fault => Some(Follow::LeaveFault),
        (State::Master, State::Backup) => Some(Follow::BecomeMaster),
        (State::Backup, State::Master) => Some(Follow::BecomeBackup),
        _ => None,
    }
}

/// The group's scripts for entering `state`, as keepalived runs them
/// (`send_group_notifies`): the specific one as written, then `notify` with
/// `GROUP <name> <STATE> 0`.
pub fn group_notify_jobs(group: &config::SyncGroup, state: State) -> Vec<NotifyJob> {
    let (specific, name) = match state {
        State::Master => (group.notify.master.as_ref(), "MASTER"),
        State::Backup => (group.notify.backup.as_ref(), "BACKUP"),
        State::Fault => (group.notify.fault.as_ref(), "FAULT"),
        State::Initialize => (group.notify.stop.as_ref(), "STOP"),
    };
    let mut jobs: Vec<NotifyJob> = specific
        .map(|command| NotifyJob {
            command: command.clone(),
            args: Vec::new(),
            after_floating_ip_check: None,
        })
        .into_iter()
        .collect();
    if let Some(command) = &group.notify.any {
        jobs.push(NotifyJob {
            command: command.clone(),
            args: vec!["GROUP".into(), group.name.clone(), name.into(), "0".into()],
            after_floating_ip_check: None,
        });
    }
    jobs
}

/// The groups shared by the interface tasks: reports under one lock, a
/// generation bumped on every group change so the tasks holding other
/// members follow, and the group scripts queued with the instances' own.
pub struct SyncHub {
    set: Mutex<GroupSet>,
    changed: watch::Sender<u64>,
    notify: mpsc::UnboundedSender<NotifyJob>,
    fifos: Arc<NotifyFifos>,
}

impl SyncHub {
    pub fn new(
        groups: &[config::SyncGroup],
        notify: mpsc::UnboundedSender<NotifyJob>,
        fifos: Arc<NotifyFifos>,
    ) -> Self {
        Self {
            set: Mutex::new(GroupSet::new(groups)),
            changed: watch::Sender::new(0),
            notify,
            fifos,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn with<T>(&self, f: impl FnOnce(&mut GroupSet) -> T) -> T {
        let mut set = self
            .set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut set)
    }

    pub fn is_member(&self, instance: &str) -> bool {
        self.with(|set| set.is_member(instance))
    }

    pub fn state_of(&self, instance: &str) -> Option<State> {
        self.with(|set| set.state_of(instance))
    }

    /// Reports a member; on a group change, queues the group's scripts and
    /// wakes the other tasks. Returns the group's state.
    pub fn report(&self, instance: &str, report: MemberReport) -> Option<State> {
        let (change, jobs, state) = self.with(|set| {
            let change = set.report(instance, report);
            let jobs = change
                .as_ref()
                .and_then(|c| set.config(&c.group).map(|g| group_notify_jobs(g, c.to)))
                .unwrap_or_default();
            (change, jobs, set.state_of(instance))
        });
        if let Some(change) = &change {
            for job in jobs {
                let _ = self.notify.send(job);
            }
            self.fifos.group(&change.group, change.to);
            self.changed.send_modify(|generation| *generation += 1);
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(members: &[&str]) -> config::SyncGroup {
        config::SyncGroup {
            name: "G".into(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            notify: config::Notify {
                master: Some("/bin/m".into()),
                any: Some("/bin/any".into()),
                ..config::Notify::default()
            },
        }
    }

    fn r(state: State, fault: bool, wants_master: bool) -> MemberReport {
        MemberReport {
            state,
            fault,
            wants_master,
        }
    }

    const BACKUP: MemberReport = MemberReport {
        state: State::Backup,
        fault: false,
        wants_master: false,
    };

    fn started(members: &[&str]) -> GroupSet {
        let mut set = GroupSet::new(&[group(members)]);
        for m in members {
            set.report(m, BACKUP);
        }
        assert_eq!(set.state_of(members[0]), Some(State::Backup));
        set
    }

    #[test]
    fn a_group_starts_backup_and_goes_master_only_once_every_member_wants_to() {
        let mut set = GroupSet::new(&[group(&["A", "B"])]);
        assert_eq!(set.state_of("A"), Some(State::Initialize));
        let change = set.report("A", BACKUP).expect("first member up");
        assert_eq!((change.from, change.to), (State::Initialize, State::Backup));
        assert_eq!(set.report("B", BACKUP), None);
        // A's master went quiet, B's is still heard: the group stays Backup.
        assert_eq!(set.report("A", r(State::Backup, false, true)), None);
        assert_eq!(set.state_of("B"), Some(State::Backup));
        // B's too: both want it, the group goes Master.
        let change = set
            .report("B", r(State::Backup, false, true))
            .expect("master");
        assert_eq!(change.to, State::Master);
        assert_eq!(set.state_of("A"), Some(State::Master));
        assert!(!set.is_member("C"));
        assert_eq!(set.report("C", BACKUP), None);
    }

    #[test]
    fn one_member_losing_an_election_takes_the_group_to_backup() {
        let mut set = started(&["A", "B"]);
        set.report("A", r(State::Backup, false, true));
        set.report("B", r(State::Backup, false, true));
        set.report("A", r(State::Master, false, false));
        set.report("B", r(State::Master, false, false));
        assert_eq!(set.state_of("A"), Some(State::Master));
        let change = set.report("B", BACKUP).expect("lost");
        assert_eq!(change.to, State::Backup);
    }

    #[test]
    fn one_members_fault_faults_the_group_until_no_member_has_one() {
        let mut set = started(&["A", "B", "C"]);
        assert_eq!(
            set.report("A", r(State::Fault, true, false)).map(|c| c.to),
            Some(State::Fault)
        );
        assert_eq!(set.report("B", r(State::Fault, true, false)), None);
        // The others follow into Fault without a fault of their own.
        assert_eq!(set.report("C", r(State::Fault, false, false)), None);
        assert_eq!(set.report("A", r(State::Fault, false, false)), None);
        assert_eq!(set.state_of("C"), Some(State::Fault), "B still faulty");
        let change = set.report("B", r(State::Fault, false, false)).expect("up");
        assert_eq!((change.from, change.to), (State::Fault, State::Backup));
    }

    #[test]
    fn the_group_stops_once_every_member_stopped() {
        let mut set = started(&["A", "B"]);
        assert_eq!(set.report("A", MemberReport::default()), None);
        let change = set.report("B", MemberReport::default()).expect("stop");
        assert_eq!(change.to, State::Initialize);
    }

    #[test]
    fn members_follow_the_group() {
        use Follow::*;
        assert_eq!(follow(State::Fault, State::Master, false), Some(EnterFault));
        assert_eq!(follow(State::Fault, State::Backup, false), Some(EnterFault));
        assert_eq!(follow(State::Fault, State::Fault, true), None);
        assert_eq!(follow(State::Backup, State::Fault, false), Some(LeaveFault));
        assert_eq!(follow(State::Backup, State::Fault, true), None);
        assert_eq!(
            follow(State::Master, State::Backup, false),
            Some(BecomeMaster)
        );
        assert_eq!(
            follow(State::Backup, State::Master, false),
            Some(BecomeBackup)
        );
        assert_eq!(follow(State::Master, State::Master, false), None);
        assert_eq!(follow(State::Initialize, State::Backup, false), None);
        assert_eq!(follow(State::Master, State::Initialize, false), None);
    }

    #[test]
    fn group_scripts_get_keepalived_arguments() {
        let g = group(&["A"]);
        let jobs = group_notify_jobs(&g, State::Master);
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].command, "/bin/m");
        assert!(jobs[0].args.is_empty());
        assert_eq!(jobs[1].args, vec!["GROUP", "G", "MASTER", "0"]);
        let stop = group_notify_jobs(&g, State::Initialize);
        assert_eq!(stop.len(), 1);
        assert_eq!(stop[0].args, vec!["GROUP", "G", "STOP", "0"]);
    }

    #[test]
    fn the_hub_queues_group_scripts_and_wakes_the_other_tasks() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let hub = SyncHub::new(&[group(&["A", "B"])], tx, Arc::default());
        let mut woken = hub.subscribe();
        assert_eq!(hub.report("A", BACKUP), Some(State::Backup));
        assert!(woken.has_changed().unwrap());
        woken.borrow_and_update();
        let job = rx.try_recv().expect("BACKUP notify");
        assert_eq!(job.args, vec!["GROUP", "G", "BACKUP", "0"]);
        assert_eq!(hub.report("B", BACKUP), Some(State::Backup));
        assert!(!woken.has_changed().unwrap(), "no change, no wakeup");
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn the_hub_writes_group_changes_to_the_notify_fifos() {
        use std::{io::Read, os::unix::fs::OpenOptionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let fifos = Arc::new(NotifyFifos::default());
        let policy = crate::health::script::ScriptPolicy::new(false, None, None).unwrap();
        fifos.configure(
            &[config::NotifyFifo {
                path: path.clone(),
                owner: None,
                group: None,
                script: None,
            }],
            &policy,
        );
        let (tx, _rx) = mpsc::unbounded_channel();
        let hub = SyncHub::new(&[group(&["A", "B"])], tx, fifos);
        hub.report("A", BACKUP);
        hub.report("B", BACKUP);
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let mut got = String::new();
        let _ = reader.read_to_string(&mut got);
        // One change, one line.
        assert_eq!(got, "GROUP \"G\" BACKUP 0\n");
    }
}
