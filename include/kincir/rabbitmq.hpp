/// @file
/// The RabbitMQ adapter: `Connection`, `RabbitMQPublisher`, `RabbitMQSubscriber`, the URI and
/// configuration, the topic mapping and `RabbitMQConnectionPool`. Needs standalone Asio (target
/// `kincir::rabbitmq`).
#pragma once

#include <kincir/config.hpp>

#include <kincir/rabbitmq/config.hpp>      // RabbitMQConfig, URIs, presets
#include <kincir/rabbitmq/connection.hpp>  // Connection, Channel
#include <kincir/rabbitmq/mapping.hpp>     // topics to exchanges and queues, messages to properties
#include <kincir/rabbitmq/pool.hpp>        // RabbitMQConnectionPool, PooledPublisher
#include <kincir/rabbitmq/publisher.hpp>   // RabbitMQPublisher
#include <kincir/rabbitmq/subscriber.hpp>  // RabbitMQSubscriber
