// healbot under PM2: `pm2 start deploy/ecosystem.config.js && pm2 save`.
// Secrets come from the environment PM2 is started with (HEALBOT_TELEGRAM_TOKEN), never from this file.
module.exports = {
  apps: [
    {
      name: "healbot",
      script: "/opt/healbot/bin/healbot",
      args: ["run", "--config", "/etc/healbot/healbot.toml"],
      interpreter: "none",
      cwd: "/var/lib/healbot",
      autorestart: true,
      max_restarts: 10,
      min_uptime: "30s",
      restart_delay: 5000,
      kill_timeout: 90000,
      env: { PYTHONUNBUFFERED: "1" },
    },
  ],
};
