//! Opening a node's stores: the log (refetch mode for a damaged member), the snapshots
//! checked before Raft reads any, the advertised address, gossip, and the quiet start of
//! a restarted member.

use super::*;

/// Opens the log, taking the directory's lock. Acknowledged entries damaged — records this
/// node had acknowledged as durable, damaged on disk since — are never cut silently: a
/// member of a cluster (its last membership on disk names other nodes) opens again in
/// refetch mode, which copies them to `salvage/`, cuts them and records them as owed until
/// the leader sends them again; a standalone node refuses to start, naming the range and
/// what the operator can do.
pub(super) fn open_log(dir: &std::path::Path, data: &DataDir, options: Options) -> Result<Log> {
    let damage = match Log::open(dir, options.clone()) {
        Err(e @ cathedral_storage::Error::AcknowledgedDamaged { .. }) => e,
        other => return Ok(other?),
    };
    let me = Identity::load_or_create(&data.identity_file())?.node_id;
    let peers = cathedral_consensus::raft::membership_on_disk(dir)
        .map_err(|e| {
            ServerError::Storage(format!(
                "{damage}; reading this node's membership to see whether a peer holds them failed too: {e}"
            ))
        })?
        // Voters only: a learner never leads, so a sole voter's learners cannot send it
        // the entries again.
        .map_or(0, |m| m.voter_ids().filter(|n| *n != me).count());
    if peers == 0 {
        return Err(ServerError::Storage(format!(
            "{damage}. This node is standalone: no peer holds these entries, so it will not start \
             without them. Restore the data directory from a copy or a snapshot export \
             (`cathedral-log snapshot import`), or accept the loss with \
             `cathedral-log --data-dir {} repair --accept-loss` (the damaged bytes move to \
             salvage/; the loss is recorded and shown by `cathedral-log inspect` and at every start)",
            dir.display()
        )));
    }
    tracing::warn!(error = %damage, peers, "acknowledged entries damaged: cutting them (copied to salvage/ first) to fetch them again from the cluster");
    Ok(Log::open(
        dir,
        Options {
            recovery_mode: cathedral_storage::RecoveryMode::Refetch,
            ..options
        },
    )?)
}

/// Says, in one line, when the cluster this directory belongs to recorded another address
/// for this node than the one it advertises now: its peers call the recorded one, so it
/// hears from nobody (a directory reused with other flags, or copied from another node).
pub(super) async fn address_check(
    raft: Raft<TypeConfig>,
    me: u64,
    advertise: String,
    data_dir: std::path::PathBuf,
) {
    // The membership the log holds, once Raft has loaded it (a fresh node has none).
    let loaded = raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.membership_config.log_id().is_some(),
            "membership loaded",
        )
        .await;
    let Ok(metrics) = loaded else {
        return;
    };
    let m = metrics.membership_config;
    let Some(recorded) = m.membership().get_node(&me).map(|n| n.addr.clone()) else {
        return;
    };
    if recorded != advertise && m.membership().nodes().count() > 1 {
        tracing::error!(
            "this node's cluster recorded its address as {recorded}, but it advertises {advertise} now: its peers will not reach it. Start it with --bind (or --advertise) {recorded}, or, to make it a new node, give it an empty --data-dir (not {}) and --join the cluster",
            data_dir.display()
        );
    }
}

/// Checks every snapshot (whole-file checksums) before Raft reads any. A damaged snapshot
/// the node needs — the log was compacted past everything the valid ones hold — stops the
/// start with what is damaged and how to restore; one it does not need is set aside as
/// `*.snap.damaged` (kept, reported by `cathedral-log verify`) and logged, so Raft never
/// reads or sends it.
pub(super) fn check_snapshots(
    dir: &std::path::Path,
    snapshots: &SnapshotStore,
    purged_through: Option<u64>,
) -> Result<()> {
    let survey = snapshots.survey(true)?;
    if let Some(gap) = survey.gap(purged_through) {
        return Err(ServerError::DataDir {
            dir: dir.to_path_buf(),
            reason: format!(
                "{gap}. This node cannot rebuild its state. Restore it from a peer (move the directory aside and start the node again with --join ADDR of a member: the leader sends it a snapshot), or from an export (`cathedral-log --data-dir NEW snapshot import FILE`, then start on NEW). `cathedral-log --data-dir {} verify` lists every damaged file.",
                dir.display()
            ),
        });
    }
    for d in survey.damaged.iter().filter(|d| !d.set_aside) {
        let to = snapshots.set_aside(&d.finding.file)?;
        tracing::error!(
            file = %d.finding.file.display(),
            offset = d.finding.offset,
            reason = %d.finding.reason,
            moved_to = %to.display(),
            "damaged snapshot set aside; the state is rebuilt from the valid snapshots and the log"
        );
    }
    for d in survey.damaged.iter().filter(|d| d.set_aside) {
        tracing::warn!(file = %d.finding.file.display(), "a damaged snapshot set aside earlier is still here; remove it once looked at");
    }
    for p in &survey.unknown {
        tracing::warn!(file = %p.display(), "not a snapshot file, in the snapshot directory");
    }
    Ok(())
}

/// A restarted member of a multi-voter cluster does not campaign until it has heard from
/// a leader (or `QUIET_START_MS` passed with none): its log is likely behind, so its votes
/// would be refused, and openraft 0.9 then remembers having seen a greater log and delays
/// this node's next election by twice the maximum election timeout — in the next failover,
/// perhaps long after. A lone voter campaigns at once.
pub(super) fn quiet_start(
    raft: &Raft<TypeConfig>,
    holds: &Arc<ElectionHolds>,
    settings: &cathedral_consensus::raft::RaftSettings,
    leader_heard: Arc<tokio::sync::Notify>,
) {
    let voters = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .count();
    if voters < 2 {
        return;
    }
    holds.set(raft, Hold::Quiet, true);
    let (raft, holds, quiet) = (
        raft.clone(),
        holds.clone(),
        Duration::from_millis(QUIET_START_MS.max(4 * settings.election_timeout_max_ms)),
    );
    tokio::spawn(async move {
        // (A leader's vote restored from disk is no news of a live leader: wait for one to
        // send entries.)
        let _ = tokio::time::timeout(quiet, leader_heard.notified()).await;
        holds.set(&raft, Hold::Quiet, false);
    });
}

/// What a node keeps on disk, opened: the log, the snapshots, the state machine loaded from
/// the latest snapshot, and the archive.
pub(super) struct Stores {
    pub(super) log: Arc<Log>,
    pub(super) snapshots: SnapshotStore,
    pub(super) sm: StateMachine,
    pub(super) archive: Arc<cathedral_consensus::archive::Archive>,
}

/// Opens the log (which takes the directory's LOCK: a second server on it fails here),
/// the snapshots and the archive, and loads the state from the latest snapshot. Each
/// phase is timed and logged: what a restart spends its time on is the first thing an
/// operator asks of a slow one.
pub(super) fn open_stores(config: &Config, data: &DataDir, inline_writer: bool) -> Result<Stores> {
    let dir = data.root();
    let options = Options {
        on_sync: config.metrics.then(crate::metrics::sync_observer),
        inline_writer,
        segment_bytes_max: config.log_segment_bytes,
        ..Options::default()
    };
    let phase = std::time::Instant::now();
    let log = Arc::new(open_log(dir, data, options)?);
    tracing::info!(
        ms = phase.elapsed().as_millis() as u64,
        last_index = log.last_index(),
        "log opened"
    );
    for loss in log.losses() {
        tracing::warn!(
            first = loss.first,
            last = loss.last,
            accepted_at_ms = loss.at_ms,
            "acknowledged entries {}..={} were lost to disk damage and the loss was accepted (cathedral-log repair --accept-loss)",
            loss.first,
            loss.last
        );
    }
    cathedral_consensus::raft::check_vote(&log).map_err(ServerError::Storage)?;
    let snapshots = SnapshotStore::open(data.snapshots(), SnapshotOptions::default())?;
    check_snapshots(dir, &snapshots, log.purged_through())?;
    let phase = std::time::Instant::now();
    let sm = StateMachine::open(snapshots.clone())
        .map_err(|e| ServerError::Raft(format!("open state machine: {e}")))?;
    tracing::info!(
        ms = phase.elapsed().as_millis() as u64,
        applied = sm
            .handle()
            .read()
            .unwrap()
            .last_applied
            .map_or(0, |l| l.index),
        "state loaded from the latest snapshot"
    );
    let archive = Arc::new(
        cathedral_consensus::archive::Archive::open(
            &config
                .data_dir
                .join(cathedral_consensus::archive::ARCHIVE_DIR),
            config.archive_bytes_max,
        )
        .map_err(ServerError::Storage)?,
    );
    Ok(Stores {
        log,
        snapshots,
        sm,
        archive,
    })
}

/// Starts gossip publishing this node (its tags with the run-time overlay), seeded also
/// by the peers it gossiped with before a restart, in its cluster once it has one.
pub(super) async fn start_gossip(
    config: &Config,
    data: &DataDir,
    identity: &Identity,
    overlay: &TagOverlay,
    capacity: &Capacity,
    given: crate::gossip::GossipEdges,
) -> Result<Arc<Membership>> {
    let published = Published {
        node_id: identity.node_id,
        grpc: config.advertise.clone(),
        role: config.role.name().to_string(),
        tags: overlay.apply(&config.tags),
        slots: config.slots,
        cpu_millis: capacity.cpu_millis,
        memory_bytes: capacity.memory_bytes,
    };
    let mut gossip_settings = config.gossip.clone();
    // Peers this node gossiped with before a restart are seeds too.
    for p in read_known_peers(&data.known_peers_file()) {
        if !gossip_settings.seeds.contains(&p) {
            gossip_settings.seeds.push(p);
        }
    }
    let gossip = Membership::start(gossip_settings, published, given)
        .await
        .map_err(|e| ServerError::Config(e.to_string()))?;
    if let Some(c) = identity.cluster_id.as_deref() {
        gossip.set_cluster(c).await;
    }
    Ok(gossip)
}

/// Longest a restarted member waits to hear a leader before it may campaign itself.
pub(super) const QUIET_START_MS: u64 = 1000;
