--: argv amount source reason metadata priority expires_ms
--: keys controls
--: reply mutation
--: refusals overflow expires_past conflict replay_gone
-- credit (grant, purchase, referral...): opens a lot. ARGV[9] amount, ARGV[10] source,
-- ARGV[11] reason, ARGV[12] metadata JSON, ARGV[13] priority (0-100, lower spent first),
-- ARGV[14] expiry (server ms; '' = never). The entry's '_sc.l' is the lot's opening record.
K_CTL_EXPIRY = KEYS[11]  -- an expired hold gives its spend window back (prelude.lua)
local replay = idem_lookup()
if replay then return replay end
local amount, source = tonumber(ARGV[9]), ARGV[10]
local priority = tonumber(ARGV[13] or DEFAULT_PRIORITY)
local expires = nil
if ARGV[14] and ARGV[14] ~= '' then expires = tonumber(ARGV[14]) end
if expires and expires <= NOW then return {'expires_past', fmt(expires), fmt(NOW)} end
local bal, needs_init, raw = load_balance()
if bal + amount > MAX_CREDITS then return {'overflow', fmt(bal), fmt(amount)} end
if needs_init then apply_init_if_needed(needs_init, raw) else mark_opened(raw) end
return commit('credit', amount, bal + amount, source, APP, ARGV[11], '', ARGV[12],
              function(id) lots_open(id, amount, priority, expires, source, bal) end,
              ',"l":"' .. lots_opening(priority, expires) .. '"')
