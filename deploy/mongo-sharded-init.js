// One-shot set-up of the sharded MongoDB of docker-compose.yml's `sharded` profile, run by the
// `mongo-sharded-init` service as `mongosh --nodb --quiet /deploy/mongo-sharded-init.js`:
//
//   1. initiates the config server replica set and each shard's replica set (one member each
//      here), and waits until each has a primary;
//   2. adds every shard to the cluster through mongos;
//   3. creates the databases named in PRIMARY_SHARDS on their shard (`enableSharding` with
//      `primaryShard`), so the tenant databases are spread over the shards from the start.
//
// Idempotent: every step looks first and only does what is missing, so a second run (every
// `docker compose --profile sharded up`) changes nothing. It never moves data: a database that
// already exists stays on its primary shard even if PRIMARY_SHARDS now names another one (it says
// so; move it with `movePrimary`, see docs/sharded-deployment.md). Exits 0 when the cluster is
// ready, 1 (with the reason) otherwise, so the service that depends on it does not start.
//
// Settings (environment, set in docker-compose.yml):
//   CONFIG_REPLSET        config server replica set, "name/host:port[,host:port...]"
//   SHARD_REPLSETS        the shards, "name/host:port[,...];name/host:port[,...]" (the replica set
//                         name is the shard's name)
//   MONGOS                a mongos, "host:port"
//   PRIMARY_SHARDS        "shard=db1,db2;shard2=db3": each database's primary shard
//   INIT_TIMEOUT_SECONDS  give up after this long (default 180)
//
// Plain functions only: mongosh runs this synchronously-written code by rewriting it, which does
// not work inside class constructors, generators or Array#sort callbacks.

const TIMEOUT_MS = Number(process.env.INIT_TIMEOUT_SECONDS || "180") * 1000;
const STARTED = Date.now();

function log(message) {
  print(`[mongo-sharded-init] ${message}`);
}

function fail(message) {
  log(`FAILED: ${message}`);
  quit(1);
  throw new Error(message); // not reached under mongosh; stops the script anywhere quit returns
}

function setting(name) {
  const value = (process.env[name] || "").trim();
  if (!value) fail(`${name} is not set`);
  return value;
}

function items(text, separator) {
  return text
    .split(separator)
    .map((part) => part.trim())
    .filter((part) => part.length > 0);
}

// "name/host:port,host:port" -> {name, hosts}
function parseReplicaSet(spec) {
  const slash = spec.indexOf("/");
  const name = slash > 0 ? spec.slice(0, slash).trim() : "";
  const hosts = slash > 0 ? items(spec.slice(slash + 1), ",") : [];
  if (!name || hosts.length === 0) fail(`not "name/host:port[,host:port]": ${spec}`);
  return { name, hosts };
}

// "shard=db1,db2;shard2=db3" -> [{shard, db}, ...]
function parsePlacement(spec) {
  const placement = [];
  for (const entry of items(spec, ";")) {
    const eq = entry.indexOf("=");
    const shard = eq > 0 ? entry.slice(0, eq).trim() : "";
    const dbs = eq > 0 ? items(entry.slice(eq + 1), ",") : [];
    if (!shard || dbs.length === 0) fail(`not "shard=db1,db2": ${entry}`);
    for (const db of dbs) placement.push({ shard, db });
  }
  return placement;
}

// The reply of an admin command, or {ok: 0, code, codeName, errmsg} when the server refuses it
// (mongosh throws on ok: 0; the legacy shell returned the reply). Anything else, a network error
// say, is thrown: waitFor retries it.
function command(conn, cmd) {
  try {
    return conn.getDB("admin").runCommand(cmd);
  } catch (e) {
    if (typeof e.code !== "number") throw e;
    return { ok: 0, code: e.code, codeName: e.codeName, errmsg: e.message };
  }
}

// Calls probe() once a second until it returns something truthy, which it returns; a throw
// counts as "not yet" and its message is the reason given if the time runs out.
function waitFor(what, probe) {
  let reason = "no answer yet";
  for (;;) {
    try {
      const result = probe();
      if (result) return result;
    } catch (e) {
      reason = e && e.message ? e.message : String(e);
    }
    if (Date.now() - STARTED > TIMEOUT_MS) fail(`timed out waiting for ${what}: ${reason}`);
    sleep(1000);
  }
}

// A connection to this very process (directConnection: before its replica set is initiated
// there is no replica set to discover).
function connectTo(host) {
  const uri = `mongodb://${host}/?directConnection=true&serverSelectionTimeoutMS=2000`;
  return waitFor(`${host} to answer`, () => {
    const conn = new Mongo(uri);
    const reply = command(conn, { ping: 1 });
    if (reply.ok !== 1) throw new Error(reply.errmsg);
    return conn;
  });
}

function initiateReplicaSet(set, configsvr) {
  const conn = connectTo(set.hosts[0]);
  const status = command(conn, { replSetGetStatus: 1 });
  if (status.ok === 1) {
    if (status.set !== set.name) {
      fail(`${set.hosts[0]} is in replica set ${status.set}, not ${set.name}`);
    }
    log(`replica set ${set.name}: already initiated`);
  } else if (status.code === 94 /* NotYetInitialized */) {
    const config = { _id: set.name, members: set.hosts.map((host, i) => ({ _id: i, host })) };
    if (configsvr) config.configsvr = true;
    const reply = command(conn, { replSetInitiate: config });
    if (reply.ok !== 1 && reply.code !== 23 /* AlreadyInitialized */) {
      fail(`replSetInitiate ${set.name}: ${reply.errmsg}`);
    }
    log(`replica set ${set.name}: initiated with ${set.hosts.join(", ")}`);
  } else {
    fail(`replSetGetStatus on ${set.hosts[0]}: ${status.errmsg}`);
  }
  waitFor(`a primary in replica set ${set.name}`, () => {
    const hello = command(conn, { hello: 1 });
    return hello.setName === set.name && typeof hello.primary === "string";
  });
  log(`replica set ${set.name}: has a primary`);
}

function shardNames(mongos) {
  const reply = command(mongos, { listShards: 1 });
  if (reply.ok !== 1) throw new Error(reply.errmsg);
  return reply.shards.map((shard) => shard._id);
}

function addShard(mongos, set) {
  if (shardNames(mongos).includes(set.name)) {
    log(`shard ${set.name}: already in the cluster`);
    return;
  }
  waitFor(`addShard ${set.name}`, () => {
    const seed = `${set.name}/${set.hosts.join(",")}`;
    const reply = command(mongos, { addShard: seed, name: set.name });
    if (reply.ok !== 1) throw new Error(reply.errmsg);
    return true;
  });
  log(`shard ${set.name}: added`);
}

function primaryShardOf(mongos, db) {
  const entry = mongos.getDB("config").getCollection("databases").findOne({ _id: db });
  return entry ? entry.primary : null;
}

function placeDatabase(mongos, db, shard) {
  const current = primaryShardOf(mongos, db);
  if (current === shard) {
    log(`database ${db}: on ${shard}`);
    return;
  }
  if (current !== null) {
    log(
      `database ${db}: exists on ${current}, not ${shard}; left there (move it with ` +
        `db.adminCommand({movePrimary: "${db}", to: "${shard}"}) in a quiet moment)`,
    );
    return;
  }
  const reply = command(mongos, { enableSharding: db, primaryShard: shard });
  if (reply.ok !== 1) fail(`enableSharding ${db} on ${shard}: ${reply.errmsg}`);
  const placed = primaryShardOf(mongos, db);
  if (placed !== shard) fail(`database ${db} was created on ${placed}, not ${shard}`);
  log(`database ${db}: created on ${shard}`);
}

function main() {
  const configSet = parseReplicaSet(setting("CONFIG_REPLSET"));
  const shardSets = [];
  for (const spec of items(setting("SHARD_REPLSETS"), ";")) shardSets.push(parseReplicaSet(spec));
  const mongosHost = setting("MONGOS");
  const placement = parsePlacement(setting("PRIMARY_SHARDS"));
  const known = shardSets.map((set) => set.name);
  for (const { shard, db } of placement) {
    if (!known.includes(shard)) fail(`PRIMARY_SHARDS puts ${db} on ${shard}, which is not a shard`);
  }

  initiateReplicaSet(configSet, true);
  for (const set of shardSets) initiateReplicaSet(set, false);

  const mongos = connectTo(mongosHost);
  // mongos answers a ping before it has reached the config servers; listShards needs them.
  waitFor("mongos to reach the config servers", () => Array.isArray(shardNames(mongos)));
  for (const set of shardSets) addShard(mongos, set);
  const present = shardNames(mongos);
  const missing = known.filter((name) => !present.includes(name));
  if (missing.length > 0) fail(`not in listShards after addShard: ${missing.join(", ")}`);

  for (const { shard, db } of placement) placeDatabase(mongos, db, shard);
  log(`ready: ${known.length} shards, ${placement.length} databases placed`);
}

try {
  main();
} catch (e) {
  fail(e && e.message ? e.message : String(e));
}
