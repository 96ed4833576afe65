--: argv amount action reason metadata
--: keys controls alerts
--: reply mutation
--: refusals closed insufficient spend_limit conflict replay_gone
-- debit: ARGV[9] amount, ARGV[10] action, ARGV[11] reason, ARGV[12] metadata JSON.
-- Draws from the lots in consumption order; the entry's '_sc.l' records the draws.
--
-- @fast: scripts.py puts this block at the prelude's '@fast' line, before its other helpers.
-- The common debit: a new key, an initialized open account, nothing due (no hold past its
-- ttl, no lot past its expiry, no credits taken without lots), and a first lot that covers
-- the amount and stays open, as the meta hash's fast view tells (prelude.lua). Redis runs
-- a script's whole chunk on every call and each prelude `local function` is a closure
-- made anew each time; this block runs before most of them, reads what decides the case,
-- and when it is the common one writes what the general path below writes, through the
-- same helpers (append_counted, idem_put, lots_summary_text, reply_entry, in the same
-- order: the entry, its block sums with the fast view, the idempotency record, the lot
-- and the lots summary, the balance last) and returns.
-- Anything else falls through, having written nothing, to the general path.
-- tests/test_debit_fast_path.py runs both on the same histories and compares every key.
do
  local got = redis.call('HMGET', K_IDEM, IDEM_KEY, '')
  local born = tonumber(got[2])
  local fast = not got[1] and born and NOW - born < IDEM_TTL
  -- A key the SDK made for this one call ('*') is met again only by this call's re-send,
  -- within RESEND_WINDOW of its first delivery (_core/ledger_format.py): in a generation
  -- older than that, its record could only be in this one, just read.
  if fast and (NONCE ~= '*' or NOW - born < RESEND_WINDOW) then
    fast = not redis.call('HGET', K_IDEM_PREV, IDEM_KEY)
  end
  -- The init/closed marks, the block sums' 'n' and 'bo', the 'noctl' mark (prelude.lua: no
  -- spend limit or low-balance threshold to apply) and the fast view (prelude.lua: the
  -- lots summary and the soonest hold expiry, valid while its stamp is 'n') in one read.
  local marks = fast and redis.call('HMGET', K_META, 'init', 'closed', 'n', 'bo', 'noctl', 'fv')
  if marks then NOCTL_SEEN = marks[5] and true or false end
  local stamp, hx, summary
  if marks and marks[1] and not marks[2] and marks[5] and marks[6] then
    stamp, hx, summary = string.match(marks[6], '^(%d+)|(%d*)|(.*)$')
  end
  if stamp and stamp == marks[3] and (hx == '' or tonumber(hx) > NOW) then
    local bal = tonumber(redis.call('GET', K_BAL) or '0')
    local tracked, soonest, head, rem, rest =
      string.match(summary, '^(%-?%d+)|(%d*)|([^|]+)|(%d+)(|%d+|%d*|%d+|.*)$')
    if rem and tonumber(tracked) <= bal and (soonest == '' or tonumber(soonest) > NOW) then
      local head_exp = string.match(rest, '^|%d+|(%d*)|')
      local amount = tonumber(ARGV[9])
      if bal < amount then
        return {'insufficient', fmt(bal), fmt(amount)}
      end
      local left = tonumber(rem) - amount
      -- The head stays open and the soonest expiry stays what it is (else: general path).
      if left > 0 and (head_exp == '' or
                       (soonest ~= '' and tonumber(head_exp) >= tonumber(soonest))) then
        local l = head .. ':' .. fmt(amount)
        local meta = ARGV[12]
        local rec = fmt(left) .. rest
        local sum = lots_summary_text(tonumber(tracked) - amount, soonest, head, rec)
        FV_HX, FV_SUM = hx, sum
        local id, values = append_counted(marks[3], marks[4], 'debit', -amount, bal - amount,
                                          ARGV[10], APP, ARGV[11], '', IDEM_KEY, meta,
                                          sc_meta(meta, ',"l":"' .. l .. '"'))
        idem_put(IDEM_KEY, LEGACY_FP, id)
        redis.call('HSET', KEYS[8], '', sum, head, rec)
        redis.call('SET', K_BAL, values[3])
        return reply_entry(id, values, '0', l)
      end
    end
  end
end
-- @end fast
K_CTL_EXPIRY = KEYS[11]  -- an expired hold gives its spend window back (prelude.lua)
local replay = idem_lookup()
if replay then return replay end
if is_closed() then return {'closed'} end
local amount = tonumber(ARGV[9])
local bal, needs_init, raw = load_balance()
if bal < amount then return {'insufficient', fmt(bal), fmt(amount)} end
local limited, controlled = controls(KEYS[11], KEYS[12], amount, '', bal, bal - amount,
                                       ARGV[12])
if limited then return limited end
-- No controls: mark it for the fast block (derived state, with the entry's other writes).
if not controlled and not NOCTL_SEEN then
  controlled = function() redis.call('HSET', K_META, 'noctl', '1') end
end
apply_init_if_needed(needs_init, raw)
local reply = commit('debit', -amount, bal - amount, ARGV[10], APP, ARGV[11], '', ARGV[12],
                     controlled, draw_for_entry(amount))
fast_view_put()
return reply
