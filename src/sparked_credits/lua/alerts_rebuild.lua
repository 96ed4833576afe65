--: argv last_id low action entry balance
--: keys controls alerts
--: reply rebuilt
-- alerts_rebuild: the low-balance alert arming (prelude.lua, controls: the controls hash's
-- 'fired') as the full repair derived it from the ledger and the outbox
-- (controls_repair.py), written only if the ledger's last entry is still ARGV[9] and the
-- threshold still ARGV[10] (else 'moved': derive again). ARGV[11] the action:
--   'rearm'  the balance is at or above the threshold, or was since the alert 'fired'
--            names: HDEL 'fired';
--   'mark'   the crossing's alert is in the outbox, its mark was lost: 'fired' = ARGV[12];
--   'alert'  the crossing at entry ARGV[12] (balance ARGV[13] after it) has no alert: a
--            torn script lost it. XADD it, then the mark (a prefix with the alert only is
--            marked by the next repair, never alerted twice).
-- Reply {'rebuilt', action}.
local K_CTL, K_ALERTS = KEYS[11], KEYS[12]
local newest = redis.call('XREVRANGE', K_TXS, '+', '-', 'COUNT', 1)
local last = ''
if #newest > 0 then last = newest[1][1] end
if last ~= ARGV[9] then return {'moved'} end
if (redis.call('HGET', K_CTL, 'low') or '') ~= ARGV[10] then return {'moved'} end
local action = ARGV[11]
if action == 'rearm' then
  redis.call('HDEL', K_CTL, 'fired')
elseif action == 'mark' then
  redis.call('HSET', K_CTL, 'fired', ARGV[12])
elseif action == 'alert' then
  redis.call('XADD', K_ALERTS, 'MAXLEN', '~', '1000', '*', 'balance', ARGV[13],
             'threshold', ARGV[10], 'entry', ARGV[12])
  redis.call('HSET', K_CTL, 'fired', ARGV[12])
end
return {'rebuilt', action}
