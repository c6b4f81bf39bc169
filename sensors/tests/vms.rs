//! The node's VMs against fake cgroup v2 trees: discovery (libvirt and
//! Proxmox, escaped names), odd entries, quotas (clamp, restore on removal
//! and exit, drift, vanished VMs, crash restart through the state file).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use phoenix_sensors::control::Targets;
use phoenix_sensors::state::StateFile;
use phoenix_sensors::testing::{FakeSysfs, CGROUP};
use phoenix_sensors::{AgentConfig, Node};

fn no_gpu() -> Result<std::sync::Arc<dyn phoenix_sensors::gpu::GpuBackend>, String> {
    Err("disabled in this test".into())
}

fn open(fake: &FakeSysfs) -> Node {
    Node::open(fake.sysfs(), AgentConfig::default(), no_gpu(), false)
}

fn quotas(q: &[(&str, f64)]) -> Targets {
    Targets {
        vm_cpu_cores: q
            .iter()
            .map(|(id, c)| (id.to_string(), *c))
            .collect::<BTreeMap<_, _>>(),
        ..Targets::originals()
    }
}

/// A host with libvirt domain `web-1` (4 vCPUs, 8 GiB; its dash escaped)
/// and Proxmox VM 100 (a 2-core `cpulimit`), plus entries that are no VMs.
fn host() -> (FakeSysfs, String, String) {
    let fake = FakeSysfs::new();
    let web = fake.libvirt_vm(3, "web-1", 4, 8);
    let pve = fake.proxmox_vm(100, "200000 100000");
    fake.write(&format!("{CGROUP}/machine.slice/cgroup.procs"), "");
    fake.write(
        &format!("{CGROUP}/machine.slice/systemd-nspawn@c1.service/cpu.stat"),
        "usage_usec 5",
    );
    fake.write(
        &format!("{CGROUP}/qemu.slice/100.slice/cpu.stat"),
        "usage_usec 5",
    );
    (fake, web, pve)
}

#[test]
fn libvirt_and_proxmox_vms_are_found_with_vcpus_memory_and_cpu_time() {
    let (fake, web, pve) = host();
    let mut node = open(&fake);
    let t0 = Instant::now();
    let first = node.read(t0).vms.expect("VM inventory on");
    let ids: Vec<&str> = first.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, ["web-1", "100"], "the escaped dash is unescaped");
    assert_eq!(first[0].vcpus, Some(4), "libvirt vcpu directories");
    assert_eq!(first[0].mem_gib, Some(8.0));
    assert_eq!(first[0].mem_used_gib, Some(4.0));
    assert_eq!(first[0].cpu_util, None, "no interval yet");
    assert_eq!(first[1].vcpus, Some(2), "Proxmox: its cpulimit in cpu.max");
    assert_eq!(first[1].mem_gib, None, "no memory files: not known");
    assert_eq!(first[1].cpu_quota_cores, Some(2.0));
    // One second later web-1 used 2 CPU-seconds of its 4 vCPUs.
    fake.set_vm_usage(&web, 2_000_000);
    fake.set_vm_usage(&pve, 500_000);
    let second = node.read(t0 + Duration::from_secs(1)).vms.unwrap();
    assert_eq!(second[0].cpu_s, Some(2.0));
    assert_eq!(second[0].cpu_util, Some(0.5));
    assert_eq!(second[1].cpu_util, Some(0.25));
    let probe = node.probe();
    assert!(
        probe
            .vms
            .iter()
            .any(|v| v.starts_with("web-1 machine.slice/")),
        "{:?}",
        probe.vms
    );
}

#[test]
fn unbounded_limits_are_reported_as_unknown_not_as_garbage() {
    let fake = FakeSysfs::new();
    let web = fake.libvirt_vm(1, "web1", 2, 4);
    fake.write(&format!("{web}/memory.max"), 9_223_372_036_854_771_712u64);
    let pve = fake.proxmox_vm(101, "1000000000000 100000");
    let mut node = open(&fake);
    let r = node.read(Instant::now());
    let vms = r.vms.unwrap();
    assert_eq!(vms.len(), 2, "both reported");
    assert_eq!((vms[0].mem_gib, vms[0].mem_used_gib), (None, Some(2.0)));
    assert_eq!(
        (vms[1].vcpus, vms[1].cpu_quota_cores),
        (None, None),
        "{pve}"
    );
    assert_eq!(r.vm_skipped_new, 0);
}

#[test]
fn patterns_are_configurable() {
    let fake = FakeSysfs::new();
    fake.vm_scope("vms.slice/vm-db1.scope", 2, "max 100000", None);
    fake.libvirt_vm(1, "web1", 2, 4);
    let mut cfg = AgentConfig::default();
    cfg.vms.patterns = vec!["vms.slice/vm-{id}.scope".into()];
    let mut node = Node::open(fake.sysfs(), cfg, no_gpu(), false);
    let vms = node.read(Instant::now()).vms.unwrap();
    assert_eq!(
        vms.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(),
        ["db1"]
    );
}

#[test]
fn odd_cgroup_entries_are_skipped_and_counted_once_never_fatal() {
    let (fake, _web, _pve) = host();
    let odd = [
        r"machine-qemu\x2d5\x2dbad\xzz.scope", // a broken escape
        r"machine-qemu\x2d6\x2da\x20b.scope",  // "a b": not a VM id
        r"machine-qemu\x2d7\x2dx\x2fy.scope",  // "x/y": not a topic level
        r"machine-qemu\x2d8\x2d100.scope",     // id 100 again (Proxmox has it)
    ];
    for name in odd {
        fake.vm_scope(&format!("machine.slice/{name}"), 1, "max 100000", None);
    }
    let garbage = fake.libvirt_vm(9, "garbage", 1, 1);
    fake.write(&format!("{garbage}/cpu.stat"), "usage_usec lots");
    let no_stat = fake.libvirt_vm(10, "nostat", 1, 1);
    std::fs::remove_file(fake.path(&format!("{no_stat}/cpu.stat"))).unwrap();
    let bad_mem = fake.libvirt_vm(11, "badmem", 1, 1);
    fake.write(&format!("{bad_mem}/memory.current"), "-1");
    let bad_max = fake.libvirt_vm(12, "badmax", 1, 1);
    fake.write(&format!("{bad_max}/cpu.max"), "lots 100000");

    let mut node = open(&fake);
    let r = node.read(Instant::now());
    let ids: Vec<String> = r.vms.unwrap().into_iter().map(|v| v.id).collect();
    assert_eq!(ids, ["web-1", "100"], "only the good VMs");
    assert_eq!(r.vm_skipped_new, 8);
    let again = node.read(Instant::now());
    assert_eq!(again.vm_skipped_new, 0, "each odd entry is counted once");
    assert_eq!(again.vms.unwrap().len(), 2);
}

#[test]
fn a_quota_is_clamped_to_the_vcpus_and_restored_when_removed_and_on_exit() {
    let (fake, web, pve) = host();
    let web_max = format!("{web}/cpu.max");
    let pve_max = format!("{pve}/cpu.max");
    let mut node = open(&fake);
    node.read(Instant::now());
    let rep = node.apply(&quotas(&[("web-1", 2.5), ("100", 1.5)]));
    assert_eq!(rep.errors, Vec::<String>::new());
    assert_eq!(fake.read_text(&web_max), "250000 100000");
    assert_eq!(fake.read_text(&pve_max), "150000 100000");
    // vCPUs of VM 100 still come from its cpu.max before the quota.
    let vms = node.read(Instant::now()).vms.unwrap();
    assert_eq!((vms[1].vcpus, vms[1].cpu_quota_cores), (Some(2), Some(1.5)));
    node.apply(&quotas(&[("web-1", 9.0), ("100", 1.5)]));
    assert_eq!(fake.read_text(&web_max), "400000 100000", "at most 4 vCPUs");
    node.apply(&quotas(&[("web-1", 0.0), ("100", 1.5)]));
    assert_eq!(
        fake.read_text(&web_max),
        "1000 100000",
        "0 cores: the floor, never 0"
    );
    // A cap without web-1 lifts its quota; VM 100 keeps its own.
    node.apply(&quotas(&[("100", 1.5)]));
    assert_eq!(fake.read_text(&web_max), "max 100000");
    assert_eq!(fake.read_text(&pve_max), "150000 100000");
    assert_eq!(
        node.originals().vm_cpu_max.len(),
        1,
        "web-1 forgotten once restored"
    );
    let rep = node.restore();
    assert_eq!(rep.errors, Vec::<String>::new());
    assert_eq!(
        fake.read_text(&pve_max),
        "200000 100000",
        "Proxmox's cpulimit again"
    );
    assert!(node.originals().vm_cpu_max.is_empty());
}

#[test]
fn a_quota_changed_by_someone_else_is_reapplied() {
    let (fake, web, _pve) = host();
    let web_max = format!("{web}/cpu.max");
    let mut node = open(&fake);
    node.read(Instant::now());
    node.apply(&quotas(&[("web-1", 2.0)]));
    assert!(node.apply(&quotas(&[("web-1", 2.0)])).drifted.is_empty());
    fake.write(&web_max, "max 100000");
    let rep = node.apply(&quotas(&[("web-1", 2.0)]));
    assert_eq!(rep.drifted.len(), 1, "{rep:?}");
    assert_eq!(fake.read_text(&web_max), "200000 100000");
}

#[test]
fn a_vm_that_vanished_is_forgotten_and_a_quota_for_an_absent_vm_changes_nothing() {
    let (fake, web, _pve) = host();
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    let mut node = open(&fake);
    node.set_state_file(Some(state.clone()));
    node.read(Instant::now());
    node.apply(&quotas(&[("web-1", 2.0), ("ghost", 1.0)]));
    assert_eq!(state.load().unwrap().unwrap().vm_cpu_max.len(), 1);
    std::fs::remove_dir_all(fake.path(&web)).unwrap();
    node.read(Instant::now());
    let rep = node.apply(&quotas(&[("web-1", 2.0)]));
    assert_eq!((rep.writes, rep.errors.len()), (0, 0), "{rep:?}");
    assert!(node.originals().vm_cpu_max.is_empty());
    assert!(state.load().unwrap().unwrap().vm_cpu_max.is_empty());
}

#[test]
fn after_a_crash_the_next_start_restores_vm_quotas_from_the_state_file() {
    let (fake, web, pve) = host();
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::new(dir.path().join("state.json"));
    {
        let mut node = open(&fake);
        state.save(node.originals()).unwrap();
        node.set_state_file(Some(state.clone()));
        node.read(Instant::now());
        node.apply(&quotas(&[("web-1", 1.0), ("100", 0.5)]));
        assert_eq!(fake.read_text(&format!("{web}/cpu.max")), "100000 100000");
        // The agent dies here: no restore.
    }
    let previous = state.load().unwrap().expect("the state file is kept");
    assert_eq!(previous.vm_cpu_max.len(), 2);
    let mut next = open(&fake);
    let rep = next.adopt_originals(&previous);
    assert_eq!((rep.writes, rep.errors.len()), (2, 0), "{rep:?}");
    assert_eq!(fake.read_text(&format!("{web}/cpu.max")), "max 100000");
    assert_eq!(fake.read_text(&format!("{pve}/cpu.max")), "200000 100000");
    assert!(next.originals().vm_cpu_max.is_empty());
}

#[test]
fn a_vm_without_cpu_max_gets_no_quota_and_says_why() {
    let (fake, web, _pve) = host();
    std::fs::remove_file(fake.path(&format!("{web}/cpu.max"))).unwrap();
    let mut node = open(&fake);
    node.read(Instant::now());
    let rep = node.apply(&quotas(&[("web-1", 2.0)]));
    assert!(
        rep.errors.iter().any(|e| e.contains("cpu controller")),
        "{:?}",
        rep.errors
    );
    assert_eq!(rep.writes, 0);
}

#[test]
fn a_dry_run_writes_no_quota() {
    let (fake, web, _pve) = host();
    let mut node = Node::open(fake.sysfs(), AgentConfig::default(), no_gpu(), true);
    node.read(Instant::now());
    let rep = node.apply(&quotas(&[("web-1", 2.0)]));
    assert_eq!(rep.writes, 1, "it says what it would write");
    assert_eq!(fake.read_text(&format!("{web}/cpu.max")), "max 100000");
}

#[test]
fn with_vm_inventory_off_nothing_is_read_or_written() {
    let (fake, web, _pve) = host();
    let mut cfg = AgentConfig::default();
    cfg.vms.enabled = false;
    let mut node = Node::open(fake.sysfs(), cfg, no_gpu(), false);
    assert_eq!(node.read(Instant::now()).vms, None);
    node.apply(&quotas(&[("web-1", 2.0)]));
    assert_eq!(fake.read_text(&format!("{web}/cpu.max")), "max 100000");
}
